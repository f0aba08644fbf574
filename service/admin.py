"""Operator commands on the API's database: ``python -m service.admin keys create --tenant T [--admin]``.

Run them where the API's configuration is (same TRAINYARD_* environment, e.g. `kubectl exec` into an API
pod): they talk to the store directly, so the first admin key can be made before any key exists.

    python -m service.admin keys create --tenant team-vision      # prints the key once: store it now
    python -m service.admin keys list [--tenant team-vision]
    python -m service.admin keys revoke key-20261126…
    python -m service.admin tenants set team-vision --max-jobs 2 --max-gpu-workers 4 \\
        --dataset-prefix s3://datasets/team-vision
    python -m service.admin tenants budget team-vision --monthly-usd 500     # --none lifts it
    python -m service.admin tenants list
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from core.settings import get_settings
from core.spec import S3Location
from core.store import JobStore
from core.tenancy import InvalidTenantName, Tenancy, Tenant

app = typer.Typer(name="service.admin", help="Manage Trainyard API keys and tenants.", no_args_is_help=True)
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
tenants = typer.Typer(help="Per-tenant quotas, budgets and dataset allow-lists.", no_args_is_help=True)
app.add_typer(keys, name="keys")
app.add_typer(tenants, name="tenants")

TenantOpt = Annotated[str, typer.Option("--tenant", help="the tenant the key belongs to (created if new)")]


def _tenancy() -> Tenancy:
    return Tenancy(JobStore.from_url(get_settings().resolved_database_url).engine)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@keys.command("create")
def create_key(
    tenant: TenantOpt,
    admin: Annotated[bool, typer.Option("--admin", help="the key sees and manages every tenant's jobs")] = False,
) -> None:
    """Create a key and print it once (only its hash is stored: it cannot be shown again)."""
    try:
        record, key = _tenancy().create_key(tenant, admin)
    except InvalidTenantName as e:
        _fail(str(e))
        return
    typer.echo(f"created {record.id} for tenant {record.tenant}{' (admin)' if admin else ''}", err=True)
    typer.echo(key)


@keys.command("list")
def list_keys(tenant: Annotated[str | None, typer.Option(help="only this tenant's keys")] = None) -> None:
    """Every key's id, tenant, role and state (never the key itself)."""
    for record in _tenancy().list_keys(tenant):
        state = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}" if record.revoked_at else "active"
        role = "admin" if record.admin else "tenant"
        typer.echo(f"{record.id}\t{record.tenant}\t{role}\t{state}\tcreated {record.created_at:%Y-%m-%d %H:%M}")


@keys.command("revoke")
def revoke_key(key_id: Annotated[str, typer.Argument(metavar="ID", help="a key id, as `keys list` shows")]) -> None:
    """Revoke a key: its next request answers 401."""
    if not _tenancy().revoke_key(key_id):
        _fail(f"no active key with id {key_id!r}; see `python -m service.admin keys list`")
    typer.echo(f"revoked {key_id}")


@tenants.command("set")
def set_tenant(
    name: Annotated[str, typer.Argument(metavar="TENANT")],
    max_jobs: Annotated[int | None, typer.Option(min=1, help="concurrent jobs (default: the setting)")] = None,
    max_gpu_workers: Annotated[int | None, typer.Option(min=0, help="GPU workers held at once")] = None,
    dataset_prefix: Annotated[
        list[str] | None, typer.Option(help="s3://bucket/prefix the tenant may train on (repeat for several)")
    ] = None,
) -> None:
    """Set a tenant's own limits; an option left out falls back to the service-wide setting."""
    for uri in dataset_prefix or []:
        try:
            S3Location.parse(uri)
        except ValueError as e:
            _fail(f"--dataset-prefix {uri!r}: {e}")
    try:
        tenant = _tenancy().set_limits(
            Tenant(
                name=name,
                max_concurrent_jobs=max_jobs,
                max_gpu_workers=max_gpu_workers,
                dataset_prefixes=dataset_prefix,
            )
        )
    except InvalidTenantName as e:
        _fail(str(e))
        return
    typer.echo(tenant.model_dump_json())


@tenants.command("budget")
def set_budget(
    name: Annotated[str, typer.Argument(metavar="TENANT")],
    monthly_usd: Annotated[
        float | None, typer.Option("--monthly-usd", min=0, help="USD its jobs may spend per calendar month (UTC)")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="lift the tenant's budget")] = False,
) -> None:
    """Set what a tenant's jobs may spend a month (scale-up overhead included): past it, new jobs answer 402."""
    if (monthly_usd is None) == (not none):
        _fail("give --monthly-usd USD, or --none to lift the budget")
    try:
        tenant = _tenancy().set_budget(name, None if none else monthly_usd)
    except InvalidTenantName as e:
        _fail(str(e))
        return
    typer.echo(tenant.model_dump_json())


@tenants.command("list")
def list_tenants() -> None:
    """Every tenant and its own limits (null: the service-wide setting)."""
    for tenant in _tenancy().list_tenants():
        typer.echo(json.dumps(tenant.model_dump()))


if __name__ == "__main__":
    app()
