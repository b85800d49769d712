"""Errors a user can act on.

Every expected failure is one of these; the CLI prints the message (no traceback) and exits
with `exit_code`: 2 for bad input (the spec, arguments), 1 for an operation that failed.
"""

from __future__ import annotations


class HardwayError(Exception):
    exit_code = 1


class SpecError(HardwayError):
    """The cluster spec is invalid. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "cluster.yaml") -> None:
        self.problems = problems
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}"
        return head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class UsageError(HardwayError):
    exit_code = 2


class OperationError(HardwayError):
    exit_code = 1
