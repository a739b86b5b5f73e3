"""Errors that mean "the user's input is wrong" (exit code 2) as opposed to a bug (exit code 1)."""

from __future__ import annotations

from collections.abc import Iterable


class MedclInputError(ValueError):
    """Bad user input: a file, row, column or option that is wrong.

    The message must name the culprit and say what was expected. The CLI prints it without a
    traceback and exits with code 2.
    """


class InputProblems(MedclInputError):
    """Several input problems reported at once (e.g. manifest validation).

    ``problems`` holds one human-readable line per problem, each naming file / row / column.
    """

    def __init__(self, problems: Iterable[str], header: str = "invalid input"):
        self.problems = list(problems)
        self.header = header
        lines = [f"{header}: {len(self.problems)} problem(s)"] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))
