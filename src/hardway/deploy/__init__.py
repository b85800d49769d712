"""Deliver and activate bundles: facts -> diff -> push -> activate (see docs/design.md)."""
