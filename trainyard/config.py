"""Where the client finds the API and S3, in this order of precedence:

1. explicit arguments (``Client(url=…)``, ``trainyard --url …``);
2. the environment: ``TRAINYARD_URL``, ``TRAINYARD_API_KEY``, ``TRAINYARD_S3_ENDPOINT_URL``,
   ``TRAINYARD_UPLOAD_BUCKET``;
3. a TOML file: ``$TRAINYARD_CONFIG``, else ``~/.config/trainyard/config.toml``, with the same keys in lower
   case and without the prefix (``url = "https://…"``, ``api_key = "…"``);
4. the local stack, when ``<stack home>/stack.json`` exists (``$TRAINYARD_HOME``, else ``./.trainyard`` if a
   stack lives there, else the home the last ``trainyard up`` recorded in the user's config folder):
   its API and S3 URLs, its admin API key (``<stack home>/api-key``), and its local S3 key when boto3's
   usual chain finds no credentials;
5. defaults: the local stack's default API URL. (Where uploads go is the API's answer, ``GET /v1/me``.)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from infra.local.config import LOCAL_S3_KEY, StackConfig, stack_home, user_config_dir

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_UPLOAD_BUCKET = "trainyard-uploads"


def config_file() -> Path:
    explicit = os.environ.get("TRAINYARD_CONFIG")
    return Path(explicit) if explicit else user_config_dir() / "config.toml"


class _LocalStackSource(PydanticBaseSettingsSource):
    """The running local stack's URLs, read from the state file `trainyard up` writes."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ answers for all fields at once

    def __call__(self) -> dict[str, Any]:
        path = stack_home() / "stack.json"
        try:
            data = json.loads(path.read_text())
            stack = StackConfig(**{**data, "home": Path(data["home"])})
        except (OSError, ValueError, TypeError, KeyError):
            return {}
        found: dict[str, Any] = {
            "url": stack.api_url,
            "s3_endpoint_url": stack.s3_url,
            "local_s3_key": LOCAL_S3_KEY,
        }
        # A stack from before auth, or a key file this user may not read: no key from here.
        with contextlib.suppress(OSError):
            found["api_key"] = stack.api_key_file.read_text().strip() or None
        return found


class ClientConfig(BaseSettings):
    """The resolved configuration of one `Client`; build it with `ClientConfig.resolve`."""

    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    url: str = DEFAULT_URL
    api_key: SecretStr | None = None
    # None: AWS itself; the local stack's S3-compatible server otherwise.
    s3_endpoint_url: str | None = None
    # Where uploads go only with an API too old to say (GET /v1/me); the API decides otherwise.
    upload_bucket: str = DEFAULT_UPLOAD_BUCKET
    # How many times a request answered 429 or 503 with Retry-After is sent again, after the wait the API asks
    # for (each wait at most MAX_RETRY_AFTER_S, see trainyard.client); 0: never.
    max_retries: int = Field(default=4, ge=0, le=20)
    # The local stack's S3 key (both id and secret); used only when boto3 finds no credentials of its own.
    local_s3_key: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return init_settings, env_settings, toml, _LocalStackSource(settings_cls)

    @classmethod
    def resolve(cls, **explicit: Any) -> ClientConfig:
        """Explicit values win; a None means "not given", so the next source decides."""
        return cls(**{k: v for k, v in explicit.items() if v is not None})

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")
