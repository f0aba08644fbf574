"""Webhooks owed and their signatures: the outbox every resource with a `notify_url` writes to.

When a resource reaches a terminal state (a job or a batch run succeeds, fails or is cancelled), one delivery
is written here, keyed by (kind, id, attempt): a second writer of the same terminal state (another API process,
a retried pass) finds it there and adds nothing. The API's notifier (`service.notify`) sends what is due,
records every try, and retries with backoff; a delivery survives any restart because it is a row, not a task.

    Outbox(engine).enqueue(kind="batch", resource_id=run.id, attempt=run.attempt, tenant=run.tenant,
                           url=run.notify_url, status="succeeded", data={...})   # what a batch run calls

The body is fixed when the delivery is written; every try signs it anew, as Stripe does:
``Trainyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the tenant's secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from core.leases import claim, unclaimed
from core.store import (
    batch_predictions_table,
    jobs_table,
    new_id,
    webhook_deliveries_table,
    webhook_secrets_table,
)
from core.store.base import TERMINAL

ResourceKind = Literal["job", "batch"]
# The resources a request can give a notify_url, and their tables.
NOTIFYING: dict[ResourceKind, sa.Table] = {"job": jobs_table, "batch": batch_predictions_table}

SIGNATURE_HEADER = "Trainyard-Signature"
DELIVERY_HEADER = "Trainyard-Delivery"  # the delivery's id: the same on every try, so receivers can drop repeats
EVENT_HEADER = "Trainyard-Event"
SECRET_PREFIX = "whsec_"
DeliveryState = Literal["pending", "delivered", "failed"]


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for `body` sent at `timestamp` (unix seconds)."""
    signed = f"{timestamp}.".encode() + body
    return f"t={timestamp},v1={hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class Delivery(BaseModel):
    id: str
    resource_kind: str
    resource_id: str
    attempt: int
    tenant: str | None
    url: str
    event: str
    body: str
    state: DeliveryState
    tries: int
    next_try_at: datetime | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None = None


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _delivery(row: Any) -> Delivery:
    data = dict(row._mapping)
    for key in ("next_try_at", "created_at", "delivered_at"):
        data[key] = _utc(data[key])
    return Delivery.model_validate(data)


class Outbox:
    """The webhook_deliveries table: what is owed, what is due, and each try's outcome."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(
        self,
        *,
        kind: str,
        resource_id: str,
        attempt: int,
        tenant: str | None,
        url: str,
        status: str,
        data: dict[str, Any],
    ) -> Delivery | None:
        """Owe one webhook for this terminal state; None when it is owed (or was sent) already."""
        delivery_id = new_id("whd")
        event = f"{kind}.{status}"
        envelope = {"id": delivery_id, "type": event, "created_at": _now().isoformat(), "data": data}
        values = {
            "id": delivery_id,
            "resource_kind": kind,
            "resource_id": resource_id,
            "attempt": attempt,
            "tenant": tenant,
            "url": url,
            "event": event,
            "body": json.dumps(envelope, separators=(",", ":")),
            "state": "pending",
            "tries": 0,
            "next_try_at": _now(),
            "created_at": _now(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(webhook_deliveries_table.insert().values(**values))
        except sa.exc.IntegrityError:
            return None  # another writer owed it first
        return self.get(delivery_id)

    def get(self, delivery_id: str) -> Delivery | None:
        query = sa.select(webhook_deliveries_table).where(webhook_deliveries_table.c.id == delivery_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _delivery(row)

    def claim_due(self, owner: str, lease_s: float, limit: int = 16) -> list[Delivery]:
        """Pending deliveries whose next try is due, claimed for `owner` (no other process sends them meanwhile).

        A claim is a lease: a process that died while sending leaves it to the others after `lease_s`.
        """
        t, now = webhook_deliveries_table, _now()
        due = sa.and_(t.c.state == "pending", t.c.next_try_at <= now, unclaimed(t, now, lease_s))
        return [_delivery(row) for row in claim(self.engine, t, due, owner, now, t.c.next_try_at, limit)]

    def record_try(
        self, delivery_id: str, owner: str, state: DeliveryState, error: str | None, next_try_at: datetime | None
    ) -> int:
        """One try's outcome, released from `owner`'s claim; returns the tries made so far."""
        t = webhook_deliveries_table
        values: dict[str, Any] = {
            "state": state,
            "tries": t.c.tries + 1,
            "last_error": error,
            "next_try_at": next_try_at,
            "claimed_by": None,
            "claimed_at": None,
        }
        if state == "delivered":
            values["delivered_at"] = _now()
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.id == delivery_id, t.c.claimed_by == owner).values(**values))
            return int(conn.execute(sa.select(t.c.tries).where(t.c.id == delivery_id)).scalar_one())

    def ended_to_notify(self, kind: ResourceKind, since: datetime) -> list[dict[str, Any]]:
        """Resources of `kind` (jobs, batch runs) with a `notify_url` that reached a terminal state since `since`
        and are owed no webhook for it yet.

        Read from the store rather than told by whoever ended them (the driver, the reconciler, a cancel): every
        way a job or a run ends is covered, by whichever API process looks first. Both tables have the columns
        read here (id, tenant, status, attempt, params, updated_at).
        """
        r, d = NOTIFYING[kind], webhook_deliveries_table
        owed = sa.exists().where(d.c.resource_kind == kind, d.c.resource_id == r.c.id, d.c.attempt == r.c.attempt)
        query = sa.select(r).where(
            r.c.status.in_(TERMINAL),
            r.c.updated_at >= since,
            r.c.params["notify_url"].as_string().is_not(None),
            ~owed,
        )
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query).all()]


class WebhookSecrets:
    """Each tenant's signing secret: made on first use, shown to an admin (`service.admin tenants webhook-secret`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, tenant: str) -> str | None:
        t = webhook_secrets_table
        with self.engine.connect() as conn:
            return conn.execute(sa.select(t.c.secret).where(t.c.tenant == tenant)).scalar()

    def ensure(self, tenant: str) -> str:
        """The tenant's secret, made now if it has none (two processes racing keep the first one's)."""
        found = self.get(tenant)
        if found is not None:
            return found
        made = webhook_secrets_table.insert().values(tenant=tenant, secret=new_secret(), created_at=_now())
        try:
            with self.engine.begin() as conn:
                conn.execute(made)
        except sa.exc.IntegrityError:
            pass
        kept = self.get(tenant)
        assert kept is not None
        return kept

    def rotate(self, tenant: str) -> str:
        """A new secret; the next try of every delivery is signed with it."""
        self.ensure(tenant)
        secret = new_secret()
        t = webhook_secrets_table
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.tenant == tenant).values(secret=secret, created_at=_now()))
        return secret
