"""Real local stacks for the end-to-end tests: the session's shared one (tests/conftest.py) and a module's own.

A module that kills or reconfigures the stack's processes (the S3 server, Ray, the API) runs its own stack,
from `own_stack`, on free ports and a home of its own; every other end-to-end module shares the session's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from infra.local.stack import LocalStack, StackConfig


def start_ray(stack: LocalStack, **kwargs: Any) -> None:
    """`stack.start_ray`, tried twice: on a machine busy with other runs a raylet can miss Ray's fixed start-up
    deadline, and what the failed start left behind is cleared first."""
    try:
        stack.start_ray(**kwargs)
    except RuntimeError:
        stack.stop_ray()
        stack.start_ray(**kwargs)


@contextmanager
def own_stack(
    home: Path, *, num_cpus: int = 2, env: dict[str, str] | None = None, ray: bool = True, api: bool = True
) -> Iterator[LocalStack]:
    """A stack of the module's own (S3 server, then Ray and the API unless told not to); down afterwards.

    `env` is set for every process of the stack (TRAINYARD_* settings, credentials), on top of the defaults.
    """
    config = StackConfig.with_free_ports(home, num_cpus=num_cpus)
    config.env_overrides.update(env or {})
    stack = LocalStack(config)
    try:
        stack.start_s3()
        if ray:
            start_ray(stack)
        if ray and api:
            stack.start_api()
        yield stack
    finally:
        stack.down()
