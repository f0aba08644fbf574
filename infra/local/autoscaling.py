"""A local autoscaling Ray cluster: Ray's fake multi-node provider starts real raylets for declared node types.

This is what `ray.cluster_utils.AutoscalingCluster` does, minus its `ray stop --force` (which would stop
every Ray cluster on the machine) and with this stack's ports, temp folder and token: the autoscaler reads
`available_node_types` and starts and stops worker nodes (with fake resources such as `GPU: 1`) as Ray's
pending work asks for them, exactly as it would call a cloud API.
"""

from __future__ import annotations

import json
from typing import Any

from core.settings import NodeType
from infra.local.stack import LOOPBACK, LocalStack

HEAD_TYPE = "ray.head.default"


def fake_cluster_config(
    stack: LocalStack, head_resources: dict[str, float], worker_types: dict[str, NodeType], idle_timeout_s: float
) -> dict[str, Any]:
    """A cluster-launcher config for the fake provider; worker types in Trainyard's `NodeType` shape."""
    types: dict[str, Any] = {
        name: {"resources": t.resources, "node_config": {}, "min_workers": 0, "max_workers": t.max_workers or 0}
        for name, t in worker_types.items()
    }
    types[HEAD_TYPE] = {"resources": head_resources, "node_config": {}, "max_workers": 0}
    return {
        "cluster_name": f"trainyard-fake-{stack.config.gcs_port}",
        "max_workers": sum(t.max_workers or 0 for t in worker_types.values()),
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"{LOOPBACK}:{stack.config.gcs_port}",
        },
        "available_node_types": types,
        "head_node_type": HEAD_TYPE,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "upscaling_speed": 1.0,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_autoscaling_head(stack: LocalStack, worker_types: dict[str, NodeType], idle_timeout_s: float = 6.0) -> None:
    """Start the stack's Ray head with an autoscaler over `worker_types` (all starting at zero nodes)."""
    config = fake_cluster_config(stack, {"CPU": stack.config.num_cpus}, worker_types, idle_timeout_s)
    path = stack.config.home / "autoscaling.json"
    path.write_text(json.dumps(config, indent=2))
    stack.start_ray(
        extra_args=[f"--autoscaling-config={path}"],
        # The fake provider refuses to run without RAY_FAKE_CLUSTER; the autoscaler re-plans every second.
        extra_env={"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"},
    )
