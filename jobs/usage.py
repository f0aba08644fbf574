"""Where a piece of a job's work ran: the Ray node and its type, read inside the task or Ray Train worker."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def this_node() -> tuple[str, str | None]:
    """(Ray node id, node type name) of the calling process, which must run inside Ray.

    Ray's autoscaler, the cluster launcher and KubeRay set RAY_NODE_TYPE_NAME on the nodes they start.
    """
    import ray

    return ray.get_runtime_context().get_node_id(), os.environ.get("RAY_NODE_TYPE_NAME") or None


def located(fn: Callable[..., T], *args: Any) -> tuple[T, str, str | None]:
    """Run `fn(*args)` and return its result with the node id and node type it ran on."""
    result = fn(*args)
    return (result, *this_node())
