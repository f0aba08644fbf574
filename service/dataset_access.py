"""Which S3 locations a key may point the service's credentials at: each tenant's data is its own.

The service reads datasets and weights with one set of S3 credentials, so the API decides who may name what.
A non-admin key may use:

1. its tenant's own data: its uploads, ``<upload_uri>/<tenant>/`` (where the SDK and CLI put a local folder),
   and its dataset revisions (``service.revisions``);
2. its tenant's configured prefixes (``python -m service.admin tenants allow TENANT s3://…``);
3. the service-wide allow-list, ``TRAINYARD_DATASET_PREFIXES``.

Three areas hold every tenant's data and are never reached through a broader entry that merely contains them:
the other tenants' uploads (anything under ``<upload_uri>/`` but outside the tenant's own folder), their
dataset revisions, and the artifact store (``artifact_uri``: checkpoints, model weights, reports and their
thumbnails). An entry opens them only when it lies inside them, i.e. when an admin named that shared folder on
purpose. So
``s3://trainyard-uploads`` in an allow-list does not hand one tenant another's photos, while
``s3://trainyard-uploads/uploads/team-a/shared-set`` allowed for team-b does share that one folder.

Admin keys (the single-user local stack's key, and every caller when auth is off) may use any location the
service's credentials reach. Prefixes match on whole path segments: `s3://data/team-a` allows
`s3://data/team-a/cats`, not `s3://data/team-ab`.
"""

from __future__ import annotations

from core.settings import Settings
from core.spec import JobParams, S3Location
from core.tenancy import Tenancy
from service.auth import Principal
from service.errors import ApiError
from service.revisions import revisions_area, revisions_root


def _under(target: S3Location, root: S3Location) -> bool:
    return target.bucket == root.bucket and target.prefix.startswith(root.prefix)


def upload_root(settings: Settings) -> S3Location:
    return S3Location.parse(settings.upload_uri)


def tenant_upload_uri(settings: Settings, tenant: str) -> str:
    """Where `tenant`'s uploads go (the SDK and CLI ask the API for it: `GET /v1/me`)."""
    return upload_root(settings).child(tenant).uri


def _own(settings: Settings, tenant: str) -> list[S3Location]:
    """What is `tenant`'s own data: its uploads and its dataset revisions."""
    return [S3Location.parse(tenant_upload_uri(settings, tenant)), S3Location.parse(revisions_root(settings, tenant))]


def _protected(settings: Settings) -> list[tuple[S3Location, str]]:
    """The shared areas a broad allow-list entry must not open, with what they hold."""
    return [
        (upload_root(settings), "other tenants' uploads"),
        (S3Location.parse(revisions_area(settings)), "other tenants' dataset revisions"),
        (S3Location.parse(settings.artifact_uri), "the artifact store (every tenant's checkpoints and models)"),
    ]


def _opens(entry: S3Location, target: S3Location, protected: list[tuple[S3Location, str]]) -> bool:
    """Whether allow-list `entry` lets a key read `target`: it covers it, and names any protected area on purpose."""
    if not _under(target, entry):
        return False
    return all(_under(entry, area) for area, _ in protected if _under(target, area))


def check_uri_access(uri: str, field: str, principal: Principal, settings: Settings, tenancy: Tenancy) -> None:
    """Raise a 403 `dataset_not_allowed` naming `field` when `principal` may not have the service read `uri`.

    The one check for every S3 location a request names for the service to read (a job's `dataset_uri` and
    `weights_uri`, a batch prediction's `input_uri` …).
    """
    if principal.admin:
        return
    target = S3Location.parse(uri)
    own = _own(settings, principal.tenant)
    if any(_under(target, mine) for mine in own):
        return
    tenant = tenancy.get_tenant(principal.tenant)
    entries = [*((tenant.dataset_prefixes or []) if tenant else []), *settings.dataset_prefixes]
    protected = _protected(settings)
    if any(_opens(S3Location.parse(entry), target, protected) for entry in entries):
        return
    holds = next((what for area, what in protected if _under(target, area)), None)
    why = f"it is in {holds}" if holds else "it is outside every location this key may use"
    allowed = ", ".join([*(mine.uri for mine in own), *entries])
    raise ApiError(
        403,
        "dataset_not_allowed",
        f"{field}: {uri} is not allowed for tenant {principal.tenant!r}: {why}. A key of this tenant may use "
        f"{allowed} (its uploads first, then its own and the service's allow-lists; GET /v1/me lists them); "
        "upload the data with `trainyard submit ./folder`, or ask an admin to share the location "
        f"(`python -m service.admin tenants allow {principal.tenant} s3://bucket/prefix`)",
        field,
    )


def check_job_access(params: JobParams, principal: Principal, settings: Settings, tenancy: Tenancy) -> None:
    """`check_uri_access` for every location a training job reads."""
    for field, uri in (("dataset_uri", params.dataset_uri), ("weights_uri", params.weights_uri)):
        if uri is not None:
            check_uri_access(uri, field, principal, settings, tenancy)
