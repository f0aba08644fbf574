"""Which S3 locations a job may read with the service's credentials: the global allow-list and the tenant's.

Without this, anyone with a key could point the service's S3 credentials at any bucket they can read.
Prefixes match on whole path segments: `s3://data/team-a` allows `s3://data/team-a/cats`, not
`s3://data/team-ab`.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.spec import JobParams, S3Location
from core.tenancy import Tenant
from service.errors import ApiError


def _under(uri: str, allowed: str) -> bool:
    target, root = S3Location.parse(uri), S3Location.parse(allowed)
    return target.bucket == root.bucket and target.prefix.startswith(root.prefix)


def check_dataset_access(
    params: JobParams, global_prefixes: list[str], tenant: Tenant | None, own: Sequence[str] = ()
) -> None:
    """Raise a 403 naming the field when a URI the job would read is outside an allow-list that applies.

    `own`: prefixes that are the caller's own data (its dataset revisions), allowed whatever the lists say.
    """
    lists = [("the service's (TRAINYARD_DATASET_PREFIXES)", global_prefixes)]
    if tenant is not None and tenant.dataset_prefixes is not None:
        lists.append((f"tenant {tenant.name}'s", tenant.dataset_prefixes))
    for field, uri in (("dataset_uri", params.dataset_uri), ("weights_uri", params.weights_uri)):
        if uri is None or any(_under(uri, mine) for mine in own):
            continue
        for whose, prefixes in lists:
            if whose.startswith("the service") and not prefixes:
                continue  # no global list: any bucket the credentials can read
            if not any(_under(uri, allowed) for allowed in prefixes):
                shown = ", ".join(prefixes) or "nothing"
                raise ApiError(
                    403,
                    "dataset_not_allowed",
                    f"{field}: {uri} is outside {whose} allow-list ({shown}); use a location under one of "
                    "those, or ask an admin to add yours (`python -m service.admin tenants set "
                    "TENANT --dataset-prefix s3://bucket/prefix`)",
                    field,
                )
