"""infra/cluster/ray-cluster.yaml, checked against the launcher schema inside the installed Ray package, against
its price list and IAM policies, and bootstrapped by Ray's own AWS code against moto's EC2 and IAM."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml

from core.settings import NodeType, Settings

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "infra" / "cluster"
CONFIGS = sorted(CLUSTER.glob("*.yaml"))
CONFIG = CLUSTER / "ray-cluster.yaml"
DLAMI = "resolve:ssm:/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def gpu_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    types = config["available_node_types"].items()
    return {name: t for name, t in types if t["resources"].get("GPU", 0) > 0}


def start_command(commands: list[str]) -> str:
    (start,) = [c for c in commands if "ray start" in c]
    return start


def policy(name: str) -> dict[str, Any]:
    return dict(json.loads((CLUSTER / "iam" / f"{name}.json").read_text()))


def actions(document: dict[str, Any]) -> set[str]:
    return {a for s in document["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def test_there_is_a_launcher_config() -> None:
    assert CONFIGS == [CONFIG]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_it_validates_against_rays_schema(path: Path) -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(load(path), schema)


def test_gpu_workers_scale_from_zero_and_idle_nodes_go_back() -> None:
    config = load(CONFIG)
    assert 0 < config["idle_timeout_minutes"] <= 15
    gpus = gpu_types(config)
    assert gpus
    assert all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpus.values())
    head = config["available_node_types"][config["head_node_type"]]
    # The head trains nothing: no GPU, and no CPUs offered to Ray tasks.
    assert head["resources"] == {"CPU": 0}


def test_two_gpu_classes_each_on_spot_with_an_on_demand_fallback() -> None:
    gpus = gpu_types(load(CONFIG))
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


def test_images_are_pinned_and_ray_starts_with_token_auth() -> None:
    config = load(CONFIG)
    docker = config["docker"]
    for key in ("image", "head_image"):
        assert ":" in docker[key] and not docker[key].endswith(":latest")
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        start = start_command(commands)
        assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_TOKEN_PATH=" in start
    assert "TRAINYARD_SERVE_BIND_HOST=0.0.0.0" in " ".join(config["head_start_ray_commands"])


def test_every_node_type_has_an_ami_an_instance_profile_and_a_disk() -> None:
    """Ray's default AMI is years old for current CUDA, and a worker without an instance profile has no S3."""
    config = load(CONFIG)
    profiles = {}
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        assert node["ImageId"] == DLAMI, name
        profiles[name] = node["IamInstanceProfile"]["Name"]
        (disk,) = node["BlockDeviceMappings"]
        assert disk["DeviceName"] == "/dev/sda1" and disk["Ebs"]["VolumeSize"] >= 100, name  # Ubuntu's root device
    head = profiles.pop(config["head_node_type"])
    assert head == "trainyard-ray-head" and set(profiles.values()) == {"trainyard-ray-worker"}


def test_the_api_ports_open_to_the_vpc_only() -> None:
    rules = load(CONFIG)["provider"]["security_group"]["IpPermissions"]
    opened = {(r["FromPort"], r["ToPort"]): [ip["CidrIp"] for ip in r["IpRanges"]] for r in rules}
    assert opened.keys() == {(8265, 8265), (8000, 8000)}
    assert all(
        cidr != "0.0.0.0/0" and cidr.startswith(("10.", "172.", "192.168.")) for c in opened.values() for cidr in c
    )


def node_types() -> dict[str, NodeType]:
    return Settings(node_types=json.loads((CLUSTER / "node-types.json").read_text())).node_types


def test_the_price_list_is_keyed_by_the_launchers_node_type_names_and_matches_them() -> None:
    """The launcher starts each node with RAY_NODE_TYPE_NAME = its type's name: the keys of the price list."""
    config = load(CONFIG)
    priced = node_types()
    assert priced.keys() == config["available_node_types"].keys()
    for name, node_type in config["available_node_types"].items():
        price = priced[name]
        assert price.resources == node_type["resources"], name
        assert price.max_workers == node_type["max_workers"], name
        market = node_type["node_config"].get("InstanceMarketOptions", {}).get("MarketType", "on-demand")
        assert price.capacity_type == market, name
        assert price.billed_usd_per_hour and price.billed_usd_per_hour > 0, name
    # Spot has its own (lower) rate.
    assert priced["gpu_spot_a10g"].billed_usd_per_hour < priced["gpu_ondemand_a10g"].billed_usd_per_hour


def test_every_node_reads_the_price_list_that_file_mounts_carry() -> None:
    config = load(CONFIG)
    (target,) = [remote for remote, local in config["file_mounts"].items() if local == "infra/cluster/node-types.json"]
    assert target.startswith("~/")
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert f'TRAINYARD_NODE_TYPES="$(cat $HOME/{target[2:]})"' in start_command(commands)


def test_serve_replicas_have_a_node_type_of_their_own() -> None:
    config = load(CONFIG)
    head = shlex.split(start_command(config["head_start_ray_commands"]).replace("&&", " "))
    settings = dict(w.split("=", 1) for w in head if w.startswith("TRAINYARD_SERVE_"))
    resource = settings["TRAINYARD_SERVE_RESOURCE"]
    offering = {n for n, t in config["available_node_types"].items() if t["resources"].get(resource, 0) >= 1}
    assert offering == {"serving"}
    serving = config["available_node_types"]["serving"]
    # No CPUs offered to Ray: CPU training work can never start a serving node; replicas reserve none.
    assert serving["resources"]["CPU"] == 0 and settings["TRAINYARD_SERVE_REPLICA_CPUS"] == "0"
    assert int(settings["TRAINYARD_SERVE_MAX_REPLICAS"]) <= serving["resources"][resource] * serving["max_workers"]


def test_the_head_may_start_and_end_workers_and_nothing_else_on_ec2() -> None:
    config = load(CONFIG)
    head, worker = policy("head"), policy("worker")
    assert not {a for a in actions(worker) if not a.startswith("s3:")}
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "iam:PassRole", "ssm:GetParameters"} <= actions(head)
    statements = {s["Sid"]: s for s in head["Statement"]}
    (pass_role,) = statements["WorkersGetTheWorkerRole"]["Resource"]
    assert pass_role.endswith(":role/trainyard-ray-worker")
    tag = statements["AutoscalerEndsOnlyThisClustersNodes"]["Condition"]["StringEquals"]
    assert tag == {"ec2:ResourceTag/ray-cluster-name": config["cluster_name"]}
    (ssm,) = statements["ResolveTheAmiParameter"]["Resource"]
    assert DLAMI.removeprefix("resolve:ssm:").startswith(ssm.split("parameter", 1)[1].rstrip("*"))
    assert json.loads((CLUSTER / "iam" / "ec2-trust.json").read_text())["Statement"][0]["Principal"] == {
        "Service": "ec2.amazonaws.com"
    }


def test_the_install_guide_creates_what_the_config_names() -> None:
    guide = (REPO / "infra" / "README.md").read_text()
    for name in ("trainyard-ray-head", "trainyard-ray-worker"):
        assert re.search(rf"create-instance-profile --instance-profile-name {name}\b", guide), name
    for document in ("head", "worker", "ec2-trust"):
        assert f"infra/cluster/iam/{document}.json" in guide


def test_rays_aws_bootstrap_launches_the_head_and_a_spot_worker_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray up`'s AWS steps, run by Ray's own code against moto: the config is prepared and validated, the key
    pair, subnets and security group are set up, and the head and a spot worker launch with their profiles."""
    boto3 = pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from ray.autoscaler._private import commands
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.util import prepare_config, validate_config

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "HOME": str(tmp_path),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO)
    with moto.mock_aws():
        iam = boto3.client("iam", region_name="us-east-1")
        for role in ("trainyard-ray-head", "trainyard-ray-worker"):
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=(CLUSTER / "iam" / "ec2-trust.json").read_text())
            iam.create_instance_profile(InstanceProfileName=role)
            iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
        config = prepare_config(copy.deepcopy(load(CONFIG)))
        validate_config(config)
        booted = commands._bootstrap_config(config, no_config_cache=True)
        ec2 = boto3.client("ec2", region_name="us-east-1")
        (group,) = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] == "trainyard-ray"]
        ports = {p.get("FromPort") for p in group["IpPermissions"]}
        assert {22, 8265, 8000} <= ports
        provider = AWSNodeProvider(booted["provider"], booted["cluster_name"])
        for node_type in ("head", "gpu_spot_l4"):
            node = booted["available_node_types"][node_type]["node_config"]
            assert node["SecurityGroupIds"] == [group["GroupId"]] and node["KeyName"]
            provider.create_node(node, {"ray-user-node-type": node_type, "ray-node-name": node_type}, 1)
        launched = {i["InstanceType"]: i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]}
    assert launched["m6i.xlarge"]["IamInstanceProfile"]["Arn"].endswith("/trainyard-ray-head")
    assert launched["g6.xlarge"]["IamInstanceProfile"]["Arn"].endswith("/trainyard-ray-worker")
    assert launched["g6.xlarge"].get("InstanceLifecycle") == "spot"
    assert all(i["ImageId"] == DLAMI for i in launched.values())
    assert (tmp_path / ".ssh").is_dir()  # the key pair `ray up` made, under this test's HOME
