"""The exit codes a script can rely on (also in `trainyard --help` and the README)."""

from __future__ import annotations

from enum import IntEnum

from trainyard.errors import JobFailed, TrainyardError, Unavailable


class ExitCode(IntEnum):
    OK = 0
    JOB_FAILED = 1  # the job failed or was cancelled
    USAGE = 2  # a bad command line: unknown option, missing argument, no such local file or folder
    REFUSED = 3  # the API refused the request (4xx): the message names the field and the fix
    UNAVAILABLE = 4  # the API (or S3) is unreachable or answered 5xx: retry, or start the stack
    INTERRUPTED = 130  # Ctrl-C; a job being waited for keeps running


HELP = (
    "Exit codes: 0 ok · 1 job failed or cancelled · 2 usage error · 3 the API refused the request (4xx) · "
    "4 the API unreachable or 5xx · 130 interrupted."
)


def exit_code_for(error: TrainyardError) -> ExitCode:
    if isinstance(error, JobFailed):
        return ExitCode.JOB_FAILED
    if isinstance(error, Unavailable):
        return ExitCode.UNAVAILABLE
    if error.status is None:
        return ExitCode.USAGE  # refused before any request: a local argument is wrong
    return ExitCode.REFUSED
