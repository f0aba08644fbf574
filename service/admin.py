"""Operator commands on the API's database: ``python -m service.admin keys create --tenant T [--admin]``.

Run them where the API's configuration is (same TRAINYARD_* environment, e.g. `kubectl exec` into an API
pod): they talk to the store directly, so the first admin key can be made before any key exists.

    python -m service.admin keys create --tenant team-vision      # prints the key once: store it now
    python -m service.admin keys list [--tenant team-vision]
    python -m service.admin keys revoke key-20261126…
    python -m service.admin tenants set team-vision --max-jobs 2 --max-gpu-workers 4   # only what is given
    python -m service.admin tenants set team-vision --rate-limit 20 --burst 40          # per key, per API process
    python -m service.admin tenants allow team-b s3://trainyard-uploads/uploads/team-a/shared-set
    python -m service.admin tenants disallow team-b s3://trainyard-uploads/uploads/team-a/shared-set
    python -m service.admin tenants reset team-vision                                  # back to the settings
    python -m service.admin tenants budget team-vision --monthly-usd 500                # --none lifts it
    python -m service.admin tenants list
    python -m service.admin tenants webhook-secret team-vision [--rotate]   # signs the tenant's webhooks
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import typer

from core.settings import get_settings
from core.spec import S3Location
from core.store import JobStore
from core.tenancy import InvalidTenantName, Tenancy, Tenant, check_tenant_name
from core.webhooks import WebhookSecrets

app = typer.Typer(name="service.admin", help="Manage Trainyard API keys and tenants.", no_args_is_help=True)
keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
tenants = typer.Typer(help="Per-tenant quotas, rate limits, budgets and dataset allow-lists.", no_args_is_help=True)
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


def _check_prefixes(option: str, uris: list[str]) -> None:
    for uri in uris:
        try:
            S3Location.parse(uri)
        except ValueError as e:
            _fail(f"{option} {uri!r}: {e}")


def _show(change: Callable[[Tenancy], Tenant]) -> None:
    try:
        tenant = change(_tenancy())
    except InvalidTenantName as e:
        _fail(str(e))
        return
    typer.echo(tenant.model_dump_json())


TenantArg = Annotated[str, typer.Argument(metavar="TENANT")]
PrefixesArg = Annotated[list[str], typer.Argument(metavar="S3_PREFIX...", help="s3://bucket/prefix")]


@tenants.command("set")
def set_tenant(
    name: TenantArg,
    max_jobs: Annotated[int | None, typer.Option(min=1, help="concurrent jobs (default: the setting)")] = None,
    max_gpu_workers: Annotated[int | None, typer.Option(min=0, help="GPU workers held at once")] = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0, help="requests/s each of its keys may send to one API process (0: none)")
    ] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="requests a key may send at once beyond the rate")] = None,
    dataset_prefix: Annotated[
        list[str] | None,
        typer.Option(help="s3://bucket/prefix the tenant may train on (repeat for several; replaces its list)"),
    ] = None,
) -> None:
    """Change the limits given; the others keep their value (`reset` returns all to the service-wide settings)."""
    _check_prefixes("--dataset-prefix", dataset_prefix or [])
    given = {
        "max_concurrent_jobs": max_jobs,
        "max_gpu_workers": max_gpu_workers,
        "rate_limit_per_s": rate_limit,
        "rate_limit_burst": burst,
        "dataset_prefixes": dataset_prefix,
    }
    _show(lambda t: t.update_tenant(name, **{k: v for k, v in given.items() if v is not None}))


@tenants.command("allow")
def allow(name: TenantArg, prefixes: PrefixesArg) -> None:
    """Let the tenant's keys train on these locations too (e.g. another tenant's upload folder, shared)."""
    _check_prefixes("S3_PREFIX", prefixes)
    _show(lambda t: t.allow_prefixes(name, prefixes))


@tenants.command("disallow")
def disallow(name: TenantArg, prefixes: PrefixesArg) -> None:
    """Take locations off the tenant's own allow-list (its next job naming them answers 403)."""
    _show(lambda t: t.disallow_prefixes(name, prefixes))


@tenants.command("reset")
def reset(name: TenantArg) -> None:
    """Return every limit of the tenant to the service-wide settings, and empty its own allow-list."""
    _show(lambda t: t.set_limits(Tenant(name=name)))


@tenants.command("webhook-secret")
def webhook_secret(
    name: Annotated[str, typer.Argument(metavar="TENANT")],
    rotate: Annotated[bool, typer.Option("--rotate", help="replace it: the next try is signed anew")] = False,
) -> None:
    """Print the secret that signs the tenant's webhooks (made now if it has none); give it to the receiver."""
    try:
        check_tenant_name(name)
    except InvalidTenantName as e:
        _fail(str(e))
    secrets = WebhookSecrets(JobStore.from_url(get_settings().resolved_database_url).engine)
    typer.echo(secrets.rotate(name) if rotate else secrets.ensure(name))


@tenants.command("budget")
def set_budget(
    name: TenantArg,
    monthly_usd: Annotated[
        float | None, typer.Option("--monthly-usd", min=0, help="USD its jobs may spend per calendar month (UTC)")
    ] = None,
    none: Annotated[bool, typer.Option("--none", help="lift the tenant's budget")] = False,
) -> None:
    """Set what a tenant's jobs may spend a month (scale-up overhead included): past it, new jobs answer 402."""
    if (monthly_usd is None) == (not none):
        _fail("give --monthly-usd USD, or --none to lift the budget")
    _show(lambda t: t.update_tenant(name, monthly_budget_usd=None if none else monthly_usd))


@tenants.command("list")
def list_tenants() -> None:
    """Every tenant and its own limits (null: the service-wide setting)."""
    for tenant in _tenancy().list_tenants():
        typer.echo(json.dumps(tenant.model_dump()))


if __name__ == "__main__":
    app()
