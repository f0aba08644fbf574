"""Tenants and their API keys: who may call the API, and what each tenant may use.

A key is ``ty_`` + 43 URL-safe characters (256 random bits), shown once when created and stored only as its
SHA-256. A fast hash is the right one here: bcrypt/argon2 exist to slow down guessing of *low-entropy*
passwords, and nobody can brute-force 256 random bits however fast the hash is; a slow hash would instead
add tens of milliseconds to every API request, and a lookup by digest keeps the check one indexed query.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.engine import Engine

from core.store import api_keys_table, new_id, tenants_table

KEY_PREFIX = "ty_"
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class InvalidTenantName(ValueError):
    pass


class Tenant(BaseModel):
    name: str
    # None: the settings' default applies.
    max_concurrent_jobs: int | None = None
    max_gpu_workers: int | None = None
    dataset_prefixes: list[str] | None = Field(default=None, description="s3://bucket/prefix this tenant may use")
    # Requests per second each of its keys may send, and how many at once beyond that rate (0: unlimited).
    rate_limit_per_s: float | None = Field(default=None, ge=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    monthly_budget_usd: float | None = Field(default=None, description="what its jobs may spend a month; None: no cap")


class ApiKey(BaseModel):
    id: str
    tenant: str
    admin: bool
    created_at: datetime
    revoked_at: datetime | None = None


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant_name(name: str) -> str:
    if not _TENANT_NAME.match(name):
        raise InvalidTenantName(
            f"tenant name {name!r} is not valid: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit (e.g. 'team-vision')"
        )
    return name


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _api_key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    data = {c.name: row._mapping[c] for c in api_keys_table.c}
    data.pop("key_hash")  # never leaves this module
    data["created_at"], data["revoked_at"] = _utc(data["created_at"]), _utc(data["revoked_at"])
    return ApiKey.model_validate(data)


class Tenancy:
    """Tenants and API keys in the job store's database (same engine, same tables module)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- tenants ------------------------------------------------------------------------------------

    def ensure_tenant(self, name: str) -> Tenant:
        check_tenant_name(name)
        if self.get_tenant(name) is None:
            self._insert_once(tenants_table.insert().values(name=name, created_at=datetime.now(UTC)))
        tenant = self.get_tenant(name)
        assert tenant is not None
        return tenant

    def get_tenant(self, name: str) -> Tenant | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tenants_table).where(tenants_table.c.name == name)).first()
        return None if row is None else Tenant.model_validate(dict(row._mapping))

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(tenants_table).order_by(tenants_table.c.name)).all()
        return [Tenant.model_validate(dict(r._mapping)) for r in rows]

    def set_limits(self, tenant: Tenant) -> Tenant:
        """Store all of a tenant's own limits (None fields fall back to the settings' defaults)."""
        return self.update_tenant(tenant.name, **tenant.model_dump(exclude={"name"}))

    def update_tenant(self, name: str, **changes: Any) -> Tenant:
        """Change only the given limits of tenant `name` (created if new); None returns one to the default."""
        unknown = set(changes) - (set(Tenant.model_fields) - {"name"})
        if unknown:
            raise ValueError(f"not a tenant limit: {', '.join(sorted(unknown))}")
        merged = Tenant.model_validate({**self.ensure_tenant(name).model_dump(), **changes})
        if changes:
            with self.engine.begin() as conn:
                conn.execute(
                    tenants_table.update()
                    .where(tenants_table.c.name == name)
                    .values(**merged.model_dump(include=set(changes)))
                )
        return merged

    def allow_prefixes(self, name: str, prefixes: list[str]) -> Tenant:
        """Add s3:// prefixes to tenant `name`'s own allow-list (kept in order, each once)."""
        current = self.ensure_tenant(name).dataset_prefixes or []
        return self.update_tenant(name, dataset_prefixes=list(dict.fromkeys([*current, *prefixes])))

    def disallow_prefixes(self, name: str, prefixes: list[str]) -> Tenant:
        """Remove s3:// prefixes from tenant `name`'s own allow-list (an empty list is stored as none)."""
        kept = [p for p in self.ensure_tenant(name).dataset_prefixes or [] if p not in prefixes]
        return self.update_tenant(name, dataset_prefixes=kept or None)

    # --- keys ---------------------------------------------------------------------------------------

    def create_key(self, tenant: str, admin: bool = False) -> tuple[ApiKey, str]:
        """A new key for `tenant` (created if new). Returns the record and the key itself, shown only now."""
        key = new_key()
        return self.register_key(key, tenant, admin), key

    def register_key(self, key: str, tenant: str, admin: bool = False) -> ApiKey:
        """Store a key generated elsewhere (the local stack's bootstrap file); a key stored already is kept."""
        self.ensure_tenant(tenant)
        digest = hash_key(key)
        self._insert_once(
            api_keys_table.insert().values(
                id=new_id("key"), tenant=tenant, key_hash=digest, admin=admin, created_at=datetime.now(UTC)
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys_table).where(api_keys_table.c.key_hash == digest)).one()
        return _api_key(row)

    def _insert_once(self, insert: sa.Insert) -> None:
        """Insert a row whose unique key may be there already: kept as it is if so.

        Checking first and inserting after is a race when API replicas start together on one store (each
        registers the bootstrap key): the loser's duplicate-key error made its start-up fail.
        """
        try:
            with self.engine.begin() as conn:
                conn.execute(insert)
        except sa.exc.IntegrityError:
            pass

    def key_by_id(self, key_id: str) -> ApiKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys_table).where(api_keys_table.c.id == key_id)).first()
        return None if row is None else _api_key(row)

    def authenticate(self, key: str) -> ApiKey | None:
        """The live (not revoked) key record for `key`, or None."""
        found = self.authenticate_with_tenant(key)
        return None if found is None else found[0]

    def authenticate_with_tenant(self, key: str) -> tuple[ApiKey, Tenant] | None:
        """The live (not revoked) key record for `key` and its tenant, in one query; None if there is none."""
        query = (
            sa.select(api_keys_table, tenants_table)
            .join(tenants_table, tenants_table.c.name == api_keys_table.c.tenant)
            .where(api_keys_table.c.key_hash == hash_key(key), api_keys_table.c.revoked_at.is_(None))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        tenant = Tenant.model_validate({c.name: row._mapping[c] for c in tenants_table.c})
        return _api_key(row), tenant

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys_table).order_by(api_keys_table.c.created_at, api_keys_table.c.id)
        if tenant is not None:
            query = query.where(api_keys_table.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_api_key(r) for r in conn.execute(query).all()]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False if no live key has this id."""
        with self.engine.begin() as conn:
            result = conn.execute(
                api_keys_table.update()
                .where(api_keys_table.c.id == key_id, api_keys_table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
        return result.rowcount == 1
