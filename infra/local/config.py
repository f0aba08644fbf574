"""Where the single-machine stack lives and listens: its home folder and ports, shared by the stack itself
(`infra.local.stack`), the `trainyard up|down|status` commands and the SDK, which finds a running stack's API
through the state file in the same home.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
# Local-only credentials for the S3-compatible server (s3rver accepts this one fixed pair); real deployments
# take AWS's usual chain.
LOCAL_S3_KEY = "S3RVER"


# In the user's config folder: the home of the stack `trainyard up` last started, one absolute path.
RECORD_NAME = "stack-home"


def user_config_dir() -> Path:
    """The folder of the user's client config: $TRAINYARD_CONFIG's, else ~/.config/trainyard."""
    explicit = os.environ.get("TRAINYARD_CONFIG")
    return Path(explicit).parent if explicit else Path.home() / ".config" / "trainyard"


def recorded_stack_home() -> Path | None:
    """The stack home `trainyard up` recorded, if it still holds a stack."""
    try:
        home = Path((user_config_dir() / RECORD_NAME).read_text().strip())
    except OSError:
        return None
    return home if home.is_absolute() and (home / "stack.json").is_file() else None


def record_stack_home(home: Path) -> None:
    """Remember `home` as the local stack's, for commands run from other folders."""
    folder = user_config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_NAME).write_text(f"{home.resolve()}\n")


def stack_home() -> Path:
    """The stack's folder: $TRAINYARD_HOME when set and not empty; else ./.trainyard when a stack lives there;
    else the one `trainyard up` recorded in the user's config folder (so commands find it from any folder);
    else ./.trainyard (where a first `up` creates it)."""
    explicit = os.environ.get("TRAINYARD_HOME")
    if explicit:
        return Path(explicit)
    here = Path.cwd() / ".trainyard"
    if (here / "stack.json").is_file():
        return here
    return recorded_stack_home() or here


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class StackConfig:
    home: Path
    s3_port: int = 9000
    gcs_port: int = 6379
    dashboard_port: int = 8265
    serve_port: int = 8000
    api_port: int = 8080
    # Ray's defaults for these two are fixed ports (52365, 10001): a second Ray cluster on the machine (a test
    # run beside a stack) finds them taken, its dashboard agent starts without HTTP, and job submission hangs.
    dashboard_agent_port: int = 52365
    ray_client_port: int = 10001
    num_cpus: int = 2
    pids: dict[str, int] = field(default_factory=dict)
    # Settings every process of this stack gets on top of the defaults (e.g. TRAINYARD_NODE_TYPES).
    env_overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def with_free_ports(cls, home: Path, num_cpus: int = 2) -> StackConfig:
        return cls(
            home=home,
            s3_port=free_port(),
            gcs_port=free_port(),
            dashboard_port=free_port(),
            serve_port=free_port(),
            api_port=free_port(),
            dashboard_agent_port=free_port(),
            ray_client_port=free_port(),
            num_cpus=num_cpus,
        )

    @property
    def s3_url(self) -> str:
        return f"http://{LOOPBACK}:{self.s3_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{LOOPBACK}:{self.serve_port}"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def s3_data_dir(self) -> Path:
        return self.home / "s3"

    @property
    def ray_token_file(self) -> Path:
        return self.home / "ray-auth-token"

    @property
    def api_key_file(self) -> Path:
        """The stack's admin API key (mode 0600), registered by the API at start-up (bootstrap_key_file)."""
        return self.home / "api-key"

    @property
    def ray_temp_dir(self) -> Path:
        # Ray's unix socket paths must stay under ~107 characters, so not under `home`.
        return Path("/tmp") / f"trainyard-ray-{self.gcs_port}"
