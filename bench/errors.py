"""Errors that the CLI turns into one clear line and an exit code (2 = bad input, 1 = failure)."""

from __future__ import annotations


class BenchError(Exception):
    """A failure with a message meant for the user. Exit code 1."""

    exit_code = 1


class BadInput(BenchError):
    """The user's input is wrong (unknown task, missing/corrupt dataset, bad label file...). Exit code 2."""

    exit_code = 2


class UnknownTask(BadInput):
    pass


class DatasetError(BadInput):
    pass


class FeedbackError(BadInput):
    pass


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the line to print (`presa-bench sweep` prints it) and exit code 128 + signal."""

    def __init__(self, signum: int = 2, message: str = "") -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
