"""Failures a user can act on. Anything else is reported as an internal error without details."""

from __future__ import annotations


class StageError(Exception):
    """A stage failed for a reason the user can fix; `message` is shown to them as is."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[StageError], tuple[str, str]]:
        # Raised inside Ray tasks and Ray Train workers too: pickling must keep both arguments.
        return (type(self), (self.code, self.message))


class JobCancelled(Exception):
    """The job was cancelled while the driver was working on it."""
