"""Bring the Serve application up (once per cluster) and make a model servable."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from core.settings import Settings
from serving.registry import ModelPointer, write_pointer

APP_NAME = "trainyard"
ROUTE_PREFIX = "/classify"


def ensure_serving(settings: Settings) -> None:
    """Start Serve's proxy on the configured address and the classifier app, unless they already run."""
    from ray import serve
    from ray.exceptions import ActorAlreadyExistsError

    from serving.app import build_app

    url = urlparse(settings.serve_url)
    # One proxy, on the head: the API forwards every prediction to one address (serve_url), and a proxy on
    # each worker node would sit on GPU nodes that come and go (and collide on one port on one machine).
    host = settings.serve_bind_host or url.hostname or "127.0.0.1"
    options: dict[str, Any] = {"proxy_location": "HeadOnly", "http_options": {"host": host, "port": url.port or 8000}}
    try:
        serve.start(**options)
    except ActorAlreadyExistsError:
        # Another process (the API's reconciler restoring Serve, `trainyard up`) created Serve's controller in the
        # same moment, and its name is taken: the second start finds that controller and uses it.
        serve.start(**options)
    app = serve.status().applications.get(APP_NAME)
    if app is None or app.status not in ("RUNNING", "DEPLOYING"):
        # Every scaling argument comes from the settings (AppArgs' unset fields), as for `serve run`.
        serve.run(build_app(), name=APP_NAME, route_prefix=ROUTE_PREFIX, blocking=False)


def deploy_model(s3: Any, settings: Settings, model_id: str, artifact_uri: str, timeout_s: float = 300) -> list[str]:
    """Point `model_id` at its artifact and load it on a replica; returns the classes the replica sees."""
    from ray import serve

    write_pointer(s3, settings, ModelPointer(model_id=model_id, artifact_uri=artifact_uri))
    ensure_serving(settings)
    handle = serve.get_app_handle(APP_NAME)
    classes: list[str] = handle.options(multiplexed_model_id=model_id).warm.remote().result(timeout_s=timeout_s)
    return classes
