"""Errors a user can fix: the CLI prints them as one clear message, without a traceback."""


class UserError(Exception):
    """Bad input or parameters: the message says what was wrong and what to do."""


class StageError(UserError):
    """A stage cannot run on this data with these params (e.g. a class too small to split)."""


def nothing_to_do(stage: str, why: str) -> StageError:
    """A stage given no input fails loudly: an empty folder or manifest is a mistake upstream
    (a wrong path, a stage that rejected everything), never a successful run."""
    return StageError(f"{stage}: nothing to do: {why}")
