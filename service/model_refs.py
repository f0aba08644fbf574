"""How a URL names a model: by id, or by name with an alias or a version.

    /v1/models/mdl-20261126-1a2b/predict     one version, by id (what every job's `model.predict_url` says)
    /v1/models/pets@production/predict       whatever version the alias points at now
    /v1/models/pets@3/predict                version 3 of `pets`
    /v1/models/pets/predict                  `pets@production` when that alias is set, else `pets@latest`

An id wins over a name (ids are generated, `mdl-…`, so they do not collide in practice). The store is read on
every request, so moving an alias takes effect on the very next request: no cache to invalidate.

Names, versions and aliases belong to a tenant: `pets` of one tenant is not `pets` of another, and a name is
always resolved in the caller's own tenant (an admin reaches another tenant's models by id). Another tenant's
model by id answers 404, exactly like a missing one.
"""

from __future__ import annotations

import re

from core.store import LATEST_ALIAS, JobStore, ModelRecord
from service.auth import Principal
from service.errors import ApiError, model_not_found

PRODUCTION_ALIAS = "production"
# Lowercase words, so an alias can never be read as a version number (`pets@3`) or contain the separator.
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")


def resolve_model(store: JobStore, ref: str, principal: Principal) -> ModelRecord:
    """The model version `ref` names now; a 404 that says which part did not match otherwise."""
    model = store.get_model(ref)
    if model is not None:
        if not principal.owns(model.tenant):
            raise model_not_found(ref)
        return model
    name, _, selector = ref.rpartition("@")
    if not name:
        name, selector = ref, ""
    tenant = principal.tenant
    if not store.model_name_exists(name, tenant):
        raise model_not_found(ref)
    if not selector:
        found = store.get_model_by_alias(name, PRODUCTION_ALIAS, tenant) or store.get_model_by_alias(
            name, LATEST_ALIAS, tenant
        )
        what = f"{name!r} has no `{PRODUCTION_ALIAS}` or `{LATEST_ALIAS}` alias"
    elif selector.isdigit():
        found = store.get_model_version(name, int(selector), tenant)
        what = f"model {name!r} has no version {selector}"
    else:
        found = store.get_model_by_alias(name, selector, tenant)
        what = f"model {name!r} has no alias {selector!r}"
    if found is None:
        raise ApiError(404, "model_not_found", f"{what}; list its versions with GET /v1/models", "model_id")
    return found
