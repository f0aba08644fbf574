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


def check_uri_access(
    uri: str, field: str, global_prefixes: list[str], tenant: Tenant | None, own: Sequence[str] = ()
) -> None:
    """Raise a 403 `dataset_not_allowed` naming `field` when `uri` is outside an allow-list that applies.

    The one check for every S3 location a request names for the service's credentials (a job's `dataset_uri`
    and `weights_uri`, a batch prediction's `input_uri` and `output_uri`). `own`: prefixes that are the
    caller's own data (its dataset revisions), allowed whatever the lists say.
    """
    if any(_under(uri, mine) for mine in own):
        return
    lists = [("the service's (TRAINYARD_DATASET_PREFIXES)", global_prefixes)]
    if tenant is not None and tenant.dataset_prefixes is not None:
        lists.append((f"tenant {tenant.name}'s", tenant.dataset_prefixes))
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


def check_dataset_access(
    params: JobParams, global_prefixes: list[str], tenant: Tenant | None, own: Sequence[str] = ()
) -> None:
    """`check_uri_access` for every location a training job reads."""
    for field, uri in (("dataset_uri", params.dataset_uri), ("weights_uri", params.weights_uri)):
        if uri is not None:
            check_uri_access(uri, field, global_prefixes, tenant, own)
