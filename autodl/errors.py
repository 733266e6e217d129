"""Errors a user can fix: each prints as one line naming the problem and the fix."""

from __future__ import annotations


class AutodlError(Exception):
    """A problem with the user's input or settings; the CLI prints it and exits with code 2."""

    exit_code = 2

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix)
        self.problem = problem.rstrip(". ")
        self.fix = fix.rstrip(". ")

    def __str__(self) -> str:
        end = "" if self.fix.endswith(("?", "!")) else "."
        return f"{self.problem}. Fix: {self.fix}{end}"


class DataError(AutodlError):
    """The table or the target cannot be used as given."""


class ConfigError(AutodlError):
    """A setting (flag, argument, search-space file) is invalid."""


class SearchError(AutodlError):
    """The search could not produce a model (every candidate failed, budget too small)."""

    exit_code = 1


def closest(name: str, options: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """The options most similar to `name`, best first (case-insensitive)."""
    import difflib

    lowered = {option.lower(): option for option in options}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[match] for match in matches]


def did_you_mean(name: str, options: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' when a close option exists, else ''."""
    matches = closest(name, options, n=1)
    return f" (did you mean '{matches[0]}'?)" if matches else ""
