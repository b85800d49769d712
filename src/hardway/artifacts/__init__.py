"""Artifacts: upstream binaries and images, their mirror, and the operator's cache."""
