"""/redoc served entirely by the API, as /docs is (service.main: Swagger UI from the fastapi-offline package).

ReDoc's bundle (shipped in the same package) shows a "by Redocly" logo that it loads from its CDN, whatever
the options; on an air-gapped cluster that is a failed request on every visit. The API serves the bundle with
that one URL pointed at an empty inline image; nothing else of it changes.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse

REDOC_JS = "/docs-assets/redoc.standalone.js"
_CDN_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
_NO_LOGO = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"

router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def redoc_bundle() -> bytes:
    text = (files("fastapi_offline") / "static" / "redoc.standalone.js").read_text(encoding="utf-8")
    return text.replace(_CDN_LOGO, _NO_LOGO).encode()


@router.get(REDOC_JS)
def redoc_js() -> Response:
    return Response(redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "public, max-age=86400"})


def mount_redoc(app: FastAPI, path: str = "/redoc") -> None:
    @app.get(path, include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{REDOC_JS}",
            redoc_favicon_url=f"{root}/static-offline-docs/favicon.png",
            with_google_fonts=False,
        )

    app.include_router(router)
