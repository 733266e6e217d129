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


class DiskFullError(SearchError):
    """The disk filled up during the search; what was stored before it stays resumable."""


NO_SPACE_ERRNOS = (28, 122)  # ENOSPC, EDQUOT (Linux)


def disk_full(error: BaseException, output_dir) -> DiskFullError | None:
    """A DiskFullError for an OSError that means 'no space left', else None."""
    if not isinstance(error, OSError) or error.errno not in NO_SPACE_ERRNOS:
        return None
    where = f" while writing {error.filename}" if error.filename else ""
    return DiskFullError(
        f"the disk is full{where} ({error.strerror}); the candidates finished before it are kept in {output_dir}",
        f"free some space, then rerun the same command with --resume --output {output_dir}",
    )


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
