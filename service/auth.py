"""Who is calling: every /v1 request carries `Authorization: Bearer <key>` (see core.tenancy).

A key belongs to one tenant and sees only that tenant's jobs, models and everything under them; another
tenant's id answers 404 exactly like an id that does not exist, so ids cannot be probed. An admin key sees
every tenant. `/healthz`, `/readyz` and `/metrics` stay open: probes and Prometheus carry no key, and
`/metrics` holds only aggregate counters and running job ids (no names, datasets or tenants), so deployments
that must hide it restrict it at the network (the chart's NetworkPolicy), not with a key.
"""

from __future__ import annotations

import logging
from typing import Annotated, cast

from fastapi import Depends, Request
from pydantic import BaseModel

from core.settings import Settings
from core.tenancy import Tenancy, hash_key
from service.errors import ApiError
from service.rate_limit import RateLimiter, limit_for, was_metered

logger = logging.getLogger(__name__)

# Tenant of every caller when auth is off (single-user machines).
AUTH_OFF_TENANT = "default"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="trainyard"'}
_HOW_TO_GET_A_KEY = (
    "the local stack's admin key is in <stack home>/api-key (TRAINYARD_API_KEY in its environment); "
    "an admin makes tenant keys with `python -m service.admin keys create --tenant NAME`"
)


class Principal(BaseModel):
    """The caller, as resolved from its key."""

    tenant: str
    admin: bool
    key_id: str | None = None

    def owns(self, tenant: str | None) -> bool:
        """Whether this caller may see a record of `tenant` (records without a tenant: admins only)."""
        return self.admin or tenant == self.tenant

    @property
    def scope(self) -> str | None:
        """The tenant to filter listings by; None (every tenant) for an admin."""
        return None if self.admin else self.tenant


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, "Authorization", headers=_CHALLENGE)


async def get_tenancy(request: Request) -> Tenancy:
    return cast(Tenancy, request.app.state.tenancy)


def get_principal(request: Request) -> Principal:
    """A sync dependency on purpose: FastAPI runs it in its thread pool, where the key lookup may block."""
    settings = cast(Settings, request.app.state.settings)
    if not settings.auth:
        return Principal(tenant=AUTH_OFF_TENANT, admin=True)
    header = request.headers.get("Authorization")
    if not header:
        raise _unauthorized(
            "missing_api_key",
            f"this request needs an API key: send the header `Authorization: Bearer <key>`; {_HOW_TO_GET_A_KEY}",
        )
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise _unauthorized(
            "invalid_authorization",
            f"the Authorization header must read `Bearer <key>` (got a {scheme or 'blank'!r} scheme); "
            + _HOW_TO_GET_A_KEY,
        )
    found = cast(Tenancy, request.app.state.tenancy).authenticate_with_tenant(key)
    if found is None:
        # Unknown and revoked keys answer alike: the difference is nothing a caller needs to learn.
        raise _unauthorized(
            "invalid_api_key",
            f"the API key in the Authorization header is unknown or revoked; use a current key: {_HOW_TO_GET_A_KEY}",
        )
    record, tenant = found
    if not record.admin:
        limiter = cast(RateLimiter, request.app.state.limiter)
        limiter.admit(hash_key(key), limit_for(settings, tenant), metered=was_metered(request.scope))
    return Principal(tenant=record.tenant, admin=record.admin, key_id=record.id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
TenancyDep = Annotated[Tenancy, Depends(get_tenancy)]


def register_bootstrap_key(tenancy: Tenancy, settings: Settings) -> None:
    """Register the key in `settings.bootstrap_key_file` as an admin key (the local stack's first key)."""
    if settings.bootstrap_key_file is None:
        return
    try:
        key = settings.bootstrap_key_file.read_text().strip()
    except OSError as e:
        logger.warning(
            "the bootstrap key file %s cannot be read (%s); no admin key registered",
            settings.bootstrap_key_file,
            type(e).__name__,
        )
        return
    if key:
        record = tenancy.register_key(key, settings.bootstrap_tenant, admin=True)
        logger.info("bootstrap admin key %s (tenant %s) is registered", record.id, record.tenant)
