"""Rows that one process works on at a time among several (API replicas): a claim with a lease.

A row is claimed by one conditional UPDATE setting `claimed_by` and `claimed_at`: the database serialises
racing claims, and only the process whose UPDATE matched works on the row. A process that dies holding a claim
leaves the row to the others once `lease_s` has passed. Used by the webhook outbox and the MLflow mirror.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def unclaimed(table: sa.Table, now: datetime, lease_s: float, owner: str | None = None) -> sa.ColumnElement[bool]:
    """Rows nobody holds: never claimed, their lease run out, or (with `owner`) held by `owner` itself."""
    free = [table.c.claimed_at.is_(None), table.c.claimed_at < now - timedelta(seconds=lease_s)]
    if owner is not None:
        free.append(table.c.claimed_by == owner)
    return sa.or_(*free)


def claim(
    engine: Engine,
    table: sa.Table,
    due: sa.ColumnElement[bool],
    owner: str,
    now: datetime,
    order_by: Any,
    limit: int,
) -> list[sa.Row[Any]]:
    """Claim for `owner` up to `limit` rows that are `due` (a condition that includes `unclaimed`); returns them."""
    key = next(iter(table.primary_key.columns))
    with engine.connect() as conn:
        ids = conn.execute(sa.select(key).where(due).order_by(order_by).limit(limit)).scalars().all()
    claimed = []
    for row_id in ids:
        with engine.begin() as conn:
            took = conn.execute(table.update().where(key == row_id, due).values(claimed_by=owner, claimed_at=now))
            row = conn.execute(sa.select(table).where(key == row_id)).first()
        if took.rowcount == 1 and row is not None:
            claimed.append(row)
    return claimed
