"""The registered model: a version per published model, and Trainyard's aliases on the same versions.

A registered model is named by `TRAINYARD_MLFLOW_MODEL_NAME` ("{name}" by default: the job's `name`). Names are
per tenant in Trainyard but global in MLflow, so a registered model records the tenant that created it
(tag `trainyard.tenant`) and no other tenant's jobs are registered under it: the second tenant's job says so in
an event, and "{tenant}.{name}" is the setting that gives each tenant its own names.

`latest` is not mirrored: MLflow reserves it, and its own `models:/<name>/latest` already means what Trainyard's
`latest` means (the newest version). Every other alias is set on the version whose tag `trainyard.model_id`
names the model the Trainyard alias points at.
"""

from __future__ import annotations

from typing import Any

from core.store import LATEST_ALIAS, JobRecord
from service.tracking.content import TAG_JOB, TAG_MODEL, TAG_TENANT, TAG_VERSION


class NotRegistered(Exception):
    """The model is not registered, for a reason the job's event log should say (not an MLflow outage)."""


def registered_name(template: str, name: str | None, tenant: str | None) -> str:
    if not name:
        raise NotRegistered("the job has no `name`, which names the registered model")
    return template.format(name=name, tenant=tenant or "")


def _missing(error: Exception) -> bool:
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def ensure_registered_model(client: Any, name: str, tenant: str | None) -> None:
    """Create the registered model for `tenant`, or check that the one there is `tenant`'s."""
    from mlflow.exceptions import RestException

    try:
        found = client.get_registered_model(name)
    except RestException as e:
        if not _missing(e):
            raise
        client.create_registered_model(name, tags={TAG_TENANT: tenant or ""}, description="Trained by Trainyard")
        return
    owner = found.tags.get(TAG_TENANT)
    if owner != (tenant or ""):
        raise NotRegistered(
            f"the registered model {name!r} belongs to another tenant ({owner!r}); set "
            "TRAINYARD_MLFLOW_MODEL_NAME='{tenant}.{name}' to give each tenant its own names"
        )


def version_of(client: Any, name: str, tag: str, value: str) -> str | None:
    """The version of `name` tagged `tag` = `value` (registering is then not repeated after a crash)."""
    quoted = value.replace("'", "\\'")
    found = client.search_model_versions(f"name='{name}' and tag.`{tag}`='{quoted}'")
    return str(found[0].version) if found else None


def register(client: Any, name: str, run_id: str, job: JobRecord, version: int | None) -> str:
    """A version of `name` for the job's model (its run's `model/` folder); returns the version number."""
    ensure_registered_model(client, name, job.tenant)
    existing = version_of(client, name, TAG_JOB, job.id)
    if existing is not None:
        return existing
    tags = {TAG_JOB: job.id}
    if job.model_id:
        tags[TAG_MODEL] = job.model_id
    if version is not None:
        tags[TAG_VERSION] = str(version)
    created = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id, tags=tags)
    return str(created.version)


def mirror_aliases(client: Any, name: str, tenant: str | None, aliases: dict[str, str]) -> list[str]:
    """Point MLflow's aliases of `name` where Trainyard's point (`aliases`: alias -> model id); returns those set."""
    ensure_registered_model(client, name, tenant)
    mirrored = []
    for alias, model_id in sorted(aliases.items()):
        if alias == LATEST_ALIAS:
            continue
        version = version_of(client, name, TAG_MODEL, model_id)
        if version is not None:  # a version registered before tracking was on has none: nothing to point at
            client.set_registered_model_alias(name, alias, version)
            mirrored.append(alias)
    return mirrored
