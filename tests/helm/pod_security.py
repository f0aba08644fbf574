"""The Pod Security Standard "restricted", as checks over a pod template, and the pods KubeRay builds.

The rules are the official profile's (kubernetes.io/docs/concepts/security/pod-security-standards, as
implemented by k8s.io/pod-security-admission): every Baseline control plus the Restricted ones, for the
Kubernetes versions the chart supports (1.30-1.33). `restricted_violations` returns one line per broken rule,
naming the control and the field, so an empty list means the pod would be admitted in a namespace labelled
`pod-security.kubernetes.io/enforce: restricted`.

Two house rules ride along in `hardening_violations`: read-only root filesystems and a size limit on every
emptyDir (the profile requires neither).
"""

from __future__ import annotations

import copy
from typing import Any

Pod = dict[str, Any]

# Baseline: capabilities beyond the container runtime's default set may not be added.
BASELINE_CAPABILITIES = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
    "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip
# Baseline: the "safe" sysctls (the allow-list of every version since 1.0; later versions only add to it).
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
}  # fmt: skip
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted: the only volume sources allowed.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
}  # fmt: skip


def _all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def _baseline(metadata: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"host namespaces: spec.{field} must be false")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess must be false")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            out.append(f"HostPath volumes: volume {volume['name']!r} is a hostPath")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctls: {sysctl['name']} is not a safe sysctl")
    out += _selinux("spec.securityContext", pod_sc)
    out += _apparmor("spec.securityContext", pod_sc)
    if (pod_sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("seccomp: spec.securityContext.seccompProfile.type must not be Unconfined")
    for key, value in (metadata.get("annotations") or {}).items():
        allowed = value == "runtime/default" or value.startswith("localhost/")
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not allowed:
            out.append(f"AppArmor: annotation {key}={value}")
    for c in _all_containers(spec):
        where = f"container {c['name']!r}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"privileged containers: {where} securityContext.privileged must be false")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"HostProcess: {where} securityContext.windowsOptions.hostProcess must be false")
        added = set((sc.get("capabilities") or {}).get("add", [])) - BASELINE_CAPABILITIES
        if added:
            out.append(f"capabilities: {where} adds {sorted(added)}")
        for port in c.get("ports", []):
            if port.get("hostPort"):
                out.append(f"host ports: {where} port {port.get('name', port['containerPort'])} sets hostPort")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"/proc mount type: {where} securityContext.procMount must be Default")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"seccomp: {where} securityContext.seccompProfile.type must not be Unconfined")
        out += _selinux(f"{where} securityContext", sc)
        out += _apparmor(f"{where} securityContext", sc)
    return out


def _selinux(where: str, sc: dict[str, Any]) -> list[str]:
    options = sc.get("seLinuxOptions") or {}
    out = []
    if options.get("type", "") not in SELINUX_TYPES:
        out.append(f"SELinux: {where}.seLinuxOptions.type {options['type']!r} is not allowed")
    if options.get("user") or options.get("role"):
        out.append(f"SELinux: {where}.seLinuxOptions.user and .role must be unset")
    return out


def _apparmor(where: str, sc: dict[str, Any]) -> list[str]:
    kind = (sc.get("appArmorProfile") or {}).get("type")
    if kind not in (None, "RuntimeDefault", "Localhost"):
        return [f"AppArmor: {where}.appArmorProfile.type must be RuntimeDefault or Localhost, not {kind}"]
    return []


def _restricted(spec: dict[str, Any]) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    for volume in spec.get("volumes", []):
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUMES:
            out.append(f"volume types: volume {volume['name']!r} uses {sorted(sources - RESTRICTED_VOLUMES)}")
    pod_non_root = pod_sc.get("runAsNonRoot")
    if pod_non_root is False:
        out.append("running as non-root: spec.securityContext.runAsNonRoot must not be false")
    if pod_sc.get("runAsUser") == 0:
        out.append("running as non-root user: spec.securityContext.runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    for c in _all_containers(spec):
        where = f"container {c['name']!r}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"privilege escalation: {where} securityContext.allowPrivilegeEscalation must be false")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            out.append(f"running as non-root: {where} (or the pod) must set securityContext.runAsNonRoot=true")
        if sc.get("runAsUser") == 0:
            out.append(f"running as non-root user: {where} securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"seccomp: {where} (or the pod) must set seccompProfile.type RuntimeDefault or Localhost")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            out.append(f"capabilities: {where} must drop ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"capabilities: {where} may add only NET_BIND_SERVICE")
    return out


def restricted_violations(template: dict[str, Any]) -> list[str]:
    """What keeps this pod template out of a namespace enforcing Pod Security "restricted"."""
    metadata, spec = template.get("metadata") or {}, template["spec"]
    return _baseline(metadata, spec) + _restricted(spec)


def hardening_violations(template: dict[str, Any]) -> list[str]:
    """The house rules beyond the profile: read-only root filesystems, every emptyDir bounded."""
    spec = template["spec"]
    out = [
        f"container {c['name']!r}: securityContext.readOnlyRootFilesystem must be true"
        for c in _all_containers(spec)
        if not (c.get("securityContext") or {}).get("readOnlyRootFilesystem")
    ]
    out += [
        f"volume {v['name']!r}: emptyDir without sizeLimit"
        for v in spec.get("volumes", [])
        if "emptyDir" in v and not (v["emptyDir"] or {}).get("sizeLimit")
    ]
    return out


def as_kuberay_builds(cluster: dict[str, Any]) -> dict[str, Pod]:
    """The RayCluster's pod templates with what KubeRay v1.7 adds to them before creating the pods.

    The parts that matter for pod security (ray-operator/controllers/ray/common/pod.go): the autoscaler sidecar
    on the head (its securityContext, resources and volumeMounts from `autoscalerOptions`), the `wait-gcs-ready`
    init container on workers (a copy of the Ray container's securityContext and mounts), and an emptyDir for
    /dev/shm (limited to the container's memory) and, beside the autoscaler, /tmp/ray (unlimited) wherever those
    are not mounted yet.
    """
    spec = cluster["spec"]
    pods = {"head": copy.deepcopy(spec["headGroupSpec"]["template"])}
    head = pods["head"]["spec"]
    if spec.get("enableInTreeAutoscaling"):
        options = spec.get("autoscalerOptions") or {}
        sidecar = {
            "name": "autoscaler",
            "image": head["containers"][0]["image"],
            "resources": options.get("resources"),
            "volumeMounts": list(options.get("volumeMounts", [])),
        }
        if "securityContext" in options:
            sidecar["securityContext"] = options["securityContext"]
        head["containers"].append(sidecar)
        _mount_empty_dir(head, sidecar, "ray-logs", "/tmp/ray")
        _mount_empty_dir(head, head["containers"][0], "ray-logs", "/tmp/ray")
    for group in spec.get("workerGroupSpecs", []):
        pod = copy.deepcopy(group["template"])
        ray = pod["spec"]["containers"][0]
        wait = {"name": "wait-gcs-ready", "image": ray["image"], "volumeMounts": ray.get("volumeMounts", [])}
        if "securityContext" in ray:
            wait["securityContext"] = copy.deepcopy(ray["securityContext"])
        pod["spec"].setdefault("initContainers", []).append(wait)
        pods[group["groupName"]] = pod
    for pod in pods.values():
        ray = pod["spec"]["containers"][0]
        memory = (ray.get("resources") or {}).get("limits", {}).get("memory")
        _mount_empty_dir(pod["spec"], ray, "shared-mem", "/dev/shm", {"medium": "Memory", "sizeLimit": memory})
    return pods


def _mount_empty_dir(
    spec: dict[str, Any], container: dict[str, Any], name: str, path: str, source: dict[str, Any] | None = None
) -> None:
    """KubeRay's addEmptyDir: a mount only where the path is not mounted, a volume only where the name is new."""
    if any(m["mountPath"] == path for m in container.get("volumeMounts", [])):
        return
    if not any(v["name"] == name for v in spec.get("volumes", [])):
        spec.setdefault("volumes", []).append({"name": name, "emptyDir": source or {}})
    container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})
