"""infra/cluster/ray-cluster.yaml, checked against the launcher schema inside the installed Ray package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "infra" / "cluster").glob("*.yaml"))


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types = config["available_node_types"].items()
    return {name: t for name, t in types if t["resources"].get("GPU", 0) > 0}


def test_there_is_a_launcher_config() -> None:
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_it_validates_against_rays_schema(path: Path) -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(path), schema)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_gpu_workers_scale_from_zero_and_idle_nodes_go_back(path: Path) -> None:
    config = load(path)
    assert 0 < config["idle_timeout_minutes"] <= 15
    gpus = gpu_types(config)
    assert gpus
    assert all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpus.values())
    head = config["available_node_types"][config["head_node_type"]]
    # The head trains nothing: no GPU, and no CPUs offered to Ray tasks.
    assert head["resources"] == {"CPU": 0}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_two_gpu_classes_each_on_spot_with_an_on_demand_fallback(path: Path) -> None:
    gpus = gpu_types(load(path))
    classes: dict[str, set[str]] = {}
    for t in gpus.values():
        market = t["node_config"].get("InstanceMarketOptions", {}).get("MarketType", "on-demand")
        classes.setdefault(t["node_config"]["InstanceType"], set()).add(market)
    assert len(classes) >= 2
    assert all(markets == {"spot", "on-demand"} for markets in classes.values())
    # Between types that fit a request equally, Ray's autoscaler launches the one whose name sorts highest:
    # every spot type must come before every on-demand type.
    order = sorted(gpus, reverse=True)
    is_spot = ["InstanceMarketOptions" in gpus[name]["node_config"] for name in order]
    assert is_spot == sorted(is_spot, reverse=True)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_images_are_pinned_and_ray_starts_with_token_auth(path: Path) -> None:
    config = load(path)
    docker = config["docker"]
    for key in ("image", "head_image"):
        assert ":" in docker[key] and not docker[key].endswith(":latest")
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        (start,) = [c for c in commands if "ray start" in c]
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
    assert "TRAINYARD_SERVE_BIND_HOST=0.0.0.0" in " ".join(config["head_start_ray_commands"])
