"""What the rendered chart does, read from the objects `helm template` produces."""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path
from typing import Any

import ray
import yaml

from core.settings import Settings
from tests.helm.chart import CHART, by_kind, config_data, containers, env_of, one, pod_specs, render, validate

GPU_GROUPS = {"gpu-a10g", "gpu-l4"}


def ray_groups(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cluster = one(manifests, "RayCluster")
    return {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}


def api_container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    (api,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api"]
    return api


def test_gpu_groups_scale_from_zero_with_gpu_limits_node_selectors_and_tolerations(helm: Path) -> None:
    groups = ray_groups(render(helm, "two-gpu-groups"))
    assert set(groups) == GPU_GROUPS | {"serving"}
    expected_gpus = {"gpu-a10g": 1, "gpu-l4": 2}
    for name, group in groups.items():
        if name not in GPU_GROUPS:
            continue
        assert group["minReplicas"] == 0 and group["replicas"] == 0
        pod = group["template"]["spec"]
        (worker,) = pod["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == expected_gpus[name]
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == expected_gpus[name]
        assert pod["nodeSelector"]["node.kubernetes.io/instance-type"]
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert groups["gpu-a10g"]["maxReplicas"] == 4
    assert groups["gpu-l4"]["maxReplicas"] == 6


def test_a_cpu_group_asks_for_no_gpu_and_tolerates_no_gpu_taint(helm: Path) -> None:
    manifests = render(helm, "cpu-only")
    groups = ray_groups(manifests)
    assert set(groups) == {"cpu", "serving"}
    (worker,) = groups["cpu"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in worker["resources"]["limits"]
    assert "tolerations" not in groups["cpu"]["template"]["spec"]


GROUPS_OFF = ("ray.workerGroups.gpu-a10g.enabled=false", "ray.workerGroups.serving.enabled=false")


def test_a_cluster_with_every_group_off_renders_an_empty_group_list(helm: Path) -> None:
    manifests = render(helm, None, *GROUPS_OFF, "serving.resource=")
    cluster = one(manifests, "RayCluster")
    assert cluster["spec"]["workerGroupSpecs"] == []
    validate(cluster)


def test_an_upgrade_replaces_all_ray_pods_together_so_head_and_workers_run_the_same_code(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")
    assert cluster["spec"]["upgradeStrategy"] == {"type": "Recreate"}
    # A change to what Ray pods read alters the pod templates (and so triggers it): that config's checksum is on them.
    templates = [t for name, t in pod_specs(manifests).items() if name.startswith("RayCluster/")]
    checksums = {t["metadata"]["annotations"]["checksum/config"] for t in templates}
    assert len(checksums) == 1
    changed = one(render(helm, None, "config.artifactUri=s3://elsewhere"), "RayCluster")
    assert changed["spec"]["headGroupSpec"]["template"]["metadata"]["annotations"]["checksum/config"] not in checksums
    # Every Ray container reads the Ray ConfigMap and only that one.
    ray_map = next(
        m for m in by_kind(manifests, "ConfigMap") if m["metadata"]["labels"]["app.kubernetes.io/component"] == "ray"
    )
    for template in templates:
        for container in template["spec"]["containers"]:
            maps = [s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s]
            assert maps == [ray_map["metadata"]["name"]]


def test_the_head_is_a_cpu_node_that_runs_no_training(helm: Path) -> None:
    head = one(render(helm), "RayCluster")["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    (container,) = head["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_autoscaling_on_has_an_idle_timeout_and_lets_jobs_wait_for_nodes(helm: Path) -> None:
    manifests = render(helm)
    spec = one(manifests, "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] == 300
    assert config_data(manifests)["TRAINYARD_FIXED_CLUSTER"] == "false"


def test_autoscaling_off_runs_fixed_groups_and_fails_jobs_that_cannot_fit(helm: Path) -> None:
    manifests = render(helm, "autoscaling-off")
    spec = one(manifests, "RayCluster")["spec"]
    assert spec["enableInTreeAutoscaling"] is False
    assert "autoscalerOptions" not in spec
    group = ray_groups(manifests)["gpu-a10g"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 2
    assert config_data(manifests)["TRAINYARD_FIXED_CLUSTER"] == "true"


def test_ray_token_auth_is_on_for_ray_pods_and_the_api_reads_the_same_token(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")
    auth = cluster["spec"]["authOptions"]
    assert auth == {"mode": "token"}
    # KubeRay generates the token into a Secret named after the cluster; the chart renders nothing random.
    assert not by_kind(manifests, "Secret")
    api = api_container(manifests)
    env = env_of(api)
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    token_path = Path(env["RAY_AUTH_TOKEN_PATH"]["value"])
    (mount,) = [m for m in api["volumeMounts"] if Path(m["mountPath"]) == token_path.parent]
    volumes = {v["name"]: v for v in one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    source = volumes[mount["name"]]["secret"]
    assert source["secretName"] == cluster["metadata"]["name"]
    assert {"key": "auth_token", "path": token_path.name} in source["items"]  # the key KubeRay writes
    # The API runs as a non-root user: the file must be readable through the pod's fsGroup.
    pod_security = one(manifests, "Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] and pod_security["fsGroup"]
    assert source["defaultMode"] & 0o040


def test_an_existing_token_secret_is_used_instead_of_a_generated_one(helm: Path) -> None:
    manifests = render(helm, "postgresql-statefulset")
    assert one(manifests, "RayCluster")["spec"]["authOptions"]["secretName"] == "my-ray-token"
    assert all(s["metadata"]["name"] != "my-ray-token" for s in by_kind(manifests, "Secret"))
    volumes = one(manifests, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"ray-auth": "my-ray-token"}.items() <= {
        v["name"]: v.get("secret", {}).get("secretName") for v in volumes
    }.items()


def test_the_network_policy_admits_only_the_api_and_ray_pods_to_the_head(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")["metadata"]["name"]
    (head_policy,) = [
        p
        for p in by_kind(manifests, "NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].get("ray.io/node-type") == "head"
    ]
    # The labels KubeRay puts on the head pod.
    assert head_policy["spec"]["podSelector"]["matchLabels"] == {"ray.io/cluster": cluster, "ray.io/node-type": "head"}
    assert head_policy["spec"]["policyTypes"] == ["Ingress"]
    api_labels = one(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    sources = [peer for rule in head_policy["spec"]["ingress"] for peer in rule["from"]]
    assert all(set(peer) == {"podSelector"} for peer in sources), "no namespace- or IP-wide sources by default"
    selectors = [peer["podSelector"]["matchLabels"] for peer in sources]
    assert {"ray.io/cluster": cluster} in selectors
    api_selectors = [s for s in selectors if "ray.io/cluster" not in s]
    assert api_selectors and all(s.items() <= api_labels.items() for s in api_selectors)
    # The selector must not also match the Ray pods (they carry the chart's name and instance labels too).
    ray_pod_labels = pod_specs(manifests)["RayCluster/head"]["metadata"]["labels"]
    assert not any(s.items() <= ray_pod_labels.items() for s in api_selectors)


def test_no_secret_value_appears_in_a_config_map_or_an_env_literal(helm: Path) -> None:
    for values in ("postgresql-statefulset", None, "external-postgresql"):
        manifests = render(helm, values)
        secrets = [
            base64.b64decode(v).decode() for s in by_kind(manifests, "Secret") for v in s.get("data", {}).values()
        ]
        literals = [str(v) for cm in by_kind(manifests, "ConfigMap") for v in cm["data"].values()]
        for template in pod_specs(manifests).values():
            for container in containers(template):
                literals += [str(e["value"]) for e in container.get("env", []) if "value" in e]
                env = env_of(container)
                database = env.get("TRAINYARD_DATABASE_URL")
                if database is not None and "value" in database:
                    # The in-release PostgreSQL: a URL without a password, which comes from its Secret.
                    assert "@" in database["value"] and ":" not in database["value"].split("@")[0].split("//")[1]
                    assert "secretKeyRef" in env["PGPASSWORD"]["valueFrom"]
                elif database is not None:
                    assert "secretKeyRef" in database["valueFrom"]
        for secret in secrets:
            assert not any(secret in literal for literal in literals)
        assert not any("AWS_SECRET_ACCESS_KEY" in key for key in config_data(manifests))


def test_every_trainyard_process_gets_the_store_url_and_s3_credentials_from_secrets(helm: Path) -> None:
    manifests = render(helm, "external-postgresql")
    assert not by_kind(manifests, "StatefulSet")
    specs = pod_specs(manifests)
    assert set(specs) == {"Deployment/ty-trainyard-api", "RayCluster/head", "RayCluster/gpu-a10g", "RayCluster/serving"}
    accounts = {a["metadata"]["name"]: a for a in by_kind(manifests, "ServiceAccount")}
    for template in specs.values():
        account = accounts[template["spec"]["serviceAccountName"]]
        assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
        for container in containers(template):
            ref = env_of(container)["TRAINYARD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "prod-trainyard-db", "key": "sqlalchemy-url"}
            assert {"secretRef": {"name": "trainyard-s3"}} in container["envFrom"]


def test_the_optional_postgresql_statefulset_backs_the_store(helm: Path) -> None:
    manifests = render(helm, "postgresql-statefulset")
    statefulset = one(manifests, "StatefulSet")
    assert statefulset["spec"]["replicas"] == 1
    service = next(s for s in by_kind(manifests, "Service") if s["metadata"]["name"] == statefulset["metadata"]["name"])
    secret = next(s for s in by_kind(manifests, "Secret") if s["metadata"]["name"] == statefulset["metadata"]["name"])
    assert len(base64.b64decode(secret["data"]["password"])) >= 32
    api = env_of(api_container(manifests))
    assert (
        api["TRAINYARD_DATABASE_URL"]["value"]
        == f"postgresql+psycopg://trainyard@{service['metadata']['name']}:5432/trainyard"
    )
    assert api["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "password"}
    (server,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert (
        env_of(server)["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]
        == api["PGPASSWORD"]["valueFrom"]["secretKeyRef"]
    )


def test_the_api_runs_replicas_with_probes_and_migrates_before_serving(helm: Path) -> None:
    manifests = render(helm)
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    api = api_container(manifests)
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["resources"]["requests"] and api["resources"]["limits"]
    # The modules the pod runs exist in this repository.
    assert api["command"][:3] == ["uvicorn", "--factory", "service.main:create_app"]
    assert importlib.util.find_spec("service.main") is not None
    (migrate,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert migrate["command"] == ["python", "-m", "core.migrate"]
    assert importlib.util.find_spec("core.migrate") is not None
    assert "TRAINYARD_DATABASE_URL" in env_of(migrate)
    # The migration reads the same settings as the API (both ConfigMaps).
    assert [s["configMapRef"]["name"] for s in migrate["envFrom"]] == [
        s["configMapRef"]["name"] for s in api["envFrom"]
    ]


def test_the_ingress_routes_its_host_to_the_api_service(helm: Path) -> None:
    manifests = render(helm, "ingress-on")
    ingress = one(manifests, "Ingress")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "trainyard.internal.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    (service,) = [s for s in by_kind(manifests, "Service") if s["metadata"]["name"] == backend["name"]]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["spec"]["tls"][0]["secretName"] == "trainyard-tls"
    assert config_data(manifests, "api")["TRAINYARD_PUBLIC_URL"] == "https://trainyard.internal.example.com"
    assert one(manifests, "Deployment")["spec"]["replicas"] == 3


def test_the_api_and_ray_point_at_the_head_service_kuberay_creates(helm: Path) -> None:
    manifests = render(helm)
    cluster = one(manifests, "RayCluster")
    head_service = f"{cluster['metadata']['name']}-head-svc"
    data = config_data(manifests)
    assert data["TRAINYARD_RAY_ADDRESS"] == f"http://{head_service}:8265"
    assert data["TRAINYARD_SERVE_URL"] == f"http://{head_service}:8000"
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert {"dashboard": 8265, "serve": 8000, "metrics": 8080}.items() <= {
        p["name"]: p["containerPort"] for p in head["ports"]
    }.items()
    # Serve's proxy binds every interface on the head, so the Service can reach it.
    assert env_of(head)["TRAINYARD_SERVE_BIND_HOST"]["value"] == "0.0.0.0"


def test_every_trainyard_setting_the_chart_sets_exists(helm: Path) -> None:
    for values in (None, "autoscaling-off", "postgresql-statefulset"):
        manifests = render(helm, values)
        names = [k for c in ("ray", "api") for k in config_data(manifests, c) if k.startswith("TRAINYARD_")]
        for template in pod_specs(manifests).values():
            for container in containers(template):
                names += [k for k in env_of(container) if k.startswith("TRAINYARD_")]
        unknown = {n for n in names if n.removeprefix("TRAINYARD_").lower() not in Settings.model_fields}
        assert not unknown


def test_ray_version_matches_the_installed_ray() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["ray"]["version"].rsplit(".", 1)[0] == ray.__version__.rsplit(".", 1)[0]


def test_monitors_select_the_api_service_and_every_ray_pod(helm: Path) -> None:
    manifests = render(helm, "monitoring-on")
    monitor = one(manifests, "ServiceMonitor")
    service = next(s for s in by_kind(manifests, "Service") if s["metadata"]["name"].endswith("-api"))
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    pod_monitor = one(manifests, "PodMonitor")
    cluster = one(manifests, "RayCluster")["metadata"]["name"]
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {"ray.io/cluster": cluster}
    for name, template in pod_specs(manifests).items():
        if name.startswith("RayCluster/"):
            (ray_container,) = template["spec"]["containers"]
            assert "metrics" in {p["name"] for p in ray_container["ports"]}
    assert not by_kind(render(helm), "ServiceMonitor") and not by_kind(render(helm), "PodMonitor")
