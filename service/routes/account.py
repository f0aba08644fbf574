"""The caller itself: which tenant its key belongs to, where its uploads go and what it may read."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.auth import PrincipalDep, TenancyDep
from service.dataset_access import tenant_upload_uri
from service.deps import SettingsDep
from service.errors import error_responses
from service.rate_limit import RateLimit, limit_for

router = APIRouter(prefix="/v1", tags=["account"])


class CallerPublic(BaseModel):
    tenant: str
    admin: bool = Field(description="an admin key sees every tenant and may read any S3 location")
    key_id: str | None = Field(description="the key's id, as `service.admin keys list` shows it (null: auth off)")
    upload_uri: str = Field(
        description="where this tenant's uploads go (the SDK and CLI put a local folder under it)",
        examples=["s3://trainyard-uploads/uploads/team-vision/"],
    )
    dataset_prefixes: list[str] = Field(
        description="besides its uploads, the s3:// prefixes this key may train on: its tenant's and the "
        "service's allow-lists (an admin key may use any location)"
    )
    rate_limit: RateLimit | None = Field(
        description="requests this key may send to each API process (null: unlimited, as for admin keys)"
    )


@router.get(
    "/me", summary="Who this key is: its tenant, where its uploads go, what it may read", responses=error_responses()
)
def me(principal: PrincipalDep, settings: SettingsDep, tenancy: TenancyDep) -> CallerPublic:
    tenant = tenancy.get_tenant(principal.tenant)
    own = (tenant.dataset_prefixes or []) if tenant else []
    return CallerPublic(
        tenant=principal.tenant,
        admin=principal.admin,
        key_id=principal.key_id,
        upload_uri=tenant_upload_uri(settings, principal.tenant),
        dataset_prefixes=[*own, *settings.dataset_prefixes],
        rate_limit=None if principal.admin else limit_for(settings, tenant),
    )
