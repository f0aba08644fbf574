"""One configuration object for every Trainyard process (API, job driver, Ray Train workers, Serve).

Everything comes from the environment (prefix ``TRAINYARD_``), so the local stack, a Ray cluster and a
Kubernetes pod are configured the same way: the processes Ray starts inherit the environment of
``ray start``, which is how the job driver learns where the store and S3 are without the job record
ever carrying a credential. S3 credentials follow boto3's usual chain (``AWS_ACCESS_KEY_ID`` …).
"""

from __future__ import annotations

import ipaddress
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.spec import S3Uri


class NodeType(BaseModel):
    """One kind of Ray node, shaped like an entry of Ray's `available_node_types` plus its hourly price."""

    resources: dict[str, float] = Field(description="what one node offers Ray, e.g. {'CPU': 4, 'GPU': 1}")
    usd_per_hour: float | None = Field(default=None, ge=0, description="on-demand price of one node")
    max_workers: int | None = Field(
        default=None, ge=0, description="the autoscaler's limit for this type; None: not a limit Trainyard knows"
    )
    # The Helm chart and the launcher config pin every node type to one capacity type, so the type's name tells
    # which price its nodes cost.
    capacity_type: Literal["on-demand", "spot"] = Field(
        default="on-demand", description="the capacity this type's nodes run on"
    )
    spot_usd_per_hour: float | None = Field(default=None, ge=0, description="spot price of one node")

    @model_validator(mode="after")
    def _spot_has_a_spot_price(self) -> NodeType:
        if self.capacity_type == "spot" and self.spot_usd_per_hour is None and self.usd_per_hour is not None:
            raise ValueError("capacity_type 'spot' needs spot_usd_per_hour (the price its nodes are billed at)")
        return self

    @property
    def billed_usd_per_hour(self) -> float | None:
        """What one node of this type costs an hour: the spot price on spot capacity, else the on-demand one."""
        return self.spot_usd_per_hour if self.capacity_type == "spot" else self.usd_per_hour


# AWS us-east-1 on-demand Linux list prices, taken from memory of the public price list (early 2025):
# re-check them before relying on an estimate, and set TRAINYARD_NODE_TYPES to your own node types.
# Keys are Ray node type names; a node that says nothing of its type is priced as the cheapest type that fits.
DEFAULT_NODE_TYPES: dict[str, NodeType] = {
    "m7i.xlarge": NodeType(resources={"CPU": 4}, usd_per_hour=0.2016),
    "g6.xlarge": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=0.8048),  # NVIDIA L4
    "g5.xlarge": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=1.006),  # NVIDIA A10G
    "g6e.xlarge": NodeType(resources={"CPU": 4, "GPU": 1}, usd_per_hour=1.861),  # NVIDIA L40S
}
DEFAULT_RATES_AS_OF = date(2025, 1, 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINYARD_", extra="ignore")

    # Everything local (SQLite file, dataset cache) lives here unless overridden.
    home: Path = Field(default_factory=lambda: Path.home() / ".trainyard")
    # SQLAlchemy URL; empty means the SQLite file under `home`.
    database_url: str = ""
    # Where fetched datasets are cached, keyed by object ETag; empty means `home/cache`.
    cache_dir: Path | None = None
    # None means AWS itself; the local stack points this at its S3-compatible server.
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    # Tries per S3 request (the first one included) before an unreachable or throttling S3 is reported as
    # `storage_unavailable`: boto3 waits a jittered exponential backoff between tries. On a connection error its
    # base is 50 ms (0-50 ms, 0-100 ms, 0-200 ms …, capped at 20 s; 1 s for throttling), so 8 tries span about
    # 3 s on average (at most 6.4 s of backoff): an outage longer than that fails the job.
    s3_max_attempts: int = Field(default=8, ge=1, le=20)
    # Checkpoints, model artifacts and reports go under <artifact_uri>/jobs/<job id>/.
    artifact_uri: str = "s3://trainyard-artifacts"
    # Uploaded datasets (`trainyard submit ./folder`) go under <upload_uri>/<tenant>/: each tenant's keys may
    # train on their own folder there and on no other tenant's (service.dataset_access).
    upload_uri: S3Uri = "s3://trainyard-uploads/uploads"
    # Dataset revisions (relabel/exclude marks on a job's images) are written to this bucket, under
    # revisions/<tenant>/, a tenant's own data as its uploads are.
    upload_bucket: str = "trainyard-uploads"
    # Ray dashboard address: the Ray Jobs API the launcher submits to.
    ray_address: str = "http://127.0.0.1:8265"
    # Ray Serve's HTTP proxy, where the API forwards predictions.
    serve_url: str = "http://127.0.0.1:8000"
    # The address Serve's proxy binds; unset means `serve_url`'s host (one machine). On a cluster the API
    # reaches the proxy through a name the head cannot bind (a Kubernetes Service), so the head sets 0.0.0.0.
    serve_bind_host: str | None = None
    # How clients reach this API; used to build `predict_url`.
    public_url: str = "http://127.0.0.1:8080"
    # How often the reconciler compares the store with Ray (seconds).
    reconcile_interval_s: float = Field(default=10.0, gt=0)
    # True when the Ray cluster does not autoscale (one machine): a job asking for more CPUs or GPUs than
    # it has fails at once instead of waiting forever for nodes that will never come.
    fixed_cluster: bool = False
    # The cluster's node types (JSON, keyed by Ray node type name): their hourly prices estimate each job's
    # cost, and where every type names `max_workers` (an autoscaling cluster's limits) a job asking for
    # more than those nodes could ever hold fails at once instead of waiting for nodes that never come.
    node_types: dict[str, NodeType] = Field(default_factory=lambda: dict(DEFAULT_NODE_TYPES))
    # The day the prices in `node_types` were taken; shown next to every estimate.
    rates_as_of: date = DEFAULT_RATES_AS_OF
    # CPUs reserved per Serve replica. 0 on one machine: training and serving share the cores, and a
    # reservation would leave too few logical CPUs for the next training job's two workers.
    serve_replica_cpus: float = Field(default=0.0, ge=0)
    serve_replica_gpus: float = Field(default=0.0, ge=0)
    # A custom Ray resource each Serve replica asks one unit of, so that replicas run only on the nodes that
    # offer it (the chart's `serving` worker group offers `serving`), never on the head beside the GCS and the
    # job drivers nor on a GPU training node. None: replicas go wherever their CPUs and GPUs fit.
    serve_resource: str | None = None
    serve_max_replicas: int = Field(default=1, ge=1)
    # 0 lets Serve release every replica (and so the GPU nodes under them) when no one predicts; the first
    # prediction after that waits for a cold start (a replica, maybe a node, then the model load).
    serve_min_replicas: int = Field(default=1, ge=0)
    # How long a replica stays idle before Serve scales it down (Serve's own default: 600 s).
    serve_downscale_delay_s: float = Field(default=600.0, ge=0)
    # Requests one replica holds at once (being preprocessed, batched or run): two full batches, so the next
    # batch is ready when a forward ends. Past it, requests wait at Serve's proxy.
    serve_max_ongoing_requests: int = Field(default=64, ge=1)
    # Requests waiting at Serve's proxy for a replica; past this a prediction answers 503 with Retry-After
    # rather than queueing without bound (c=128 on one replica stays below 64 + 256).
    serve_max_queued_requests: int = Field(default=256, ge=1)
    # Images in one `predict:batch` request (each within `max_image_bytes`).
    max_batch_images: int = Field(default=16, ge=1, le=128)
    # Largest image body accepted for prediction (bytes).
    max_image_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Largest request body that is not an image upload (bytes): a job's JSON parameters are a few hundred.
    max_request_bytes: int = Field(default=64 * 1024, gt=0)
    # A job whose dataset has more undecodable files than this fraction fails in `validating`.
    max_bad_image_fraction: float = Field(default=0.1, ge=0, le=1)
    # Fault-injection for tests only (empty in every real deployment): seconds to hold, keyed by where. A phase
    # name ("fetching", "training", …) holds the driver at the start of that phase; "worker_batch" sleeps after
    # each batch a Ray Train worker trains or validates. On tiny test data every stage takes well under a second,
    # so a test that kills a process "during the first unfrozen epoch" needs that epoch to last long enough.
    fault_delays: dict[str, float] = Field(default_factory=dict)
    # Fault-injection for tests only (unset in every real deployment): a folder where a file named after a phase
    # holds every driver at the start of that phase until the file is gone (10 minutes at most), so a test can
    # act in a short phase however long its own steps take on a busy machine.
    fault_holds_dir: Path | None = None

    # --- access control (service.auth, core.tenancy) ---
    # Every /v1 request needs `Authorization: Bearer <key>`. `TRAINYARD_AUTH=off` is the explicit opt-out for
    # a single-user machine: every caller is then an admin, and the API logs a WARNING at every start.
    auth: bool = True
    # A file holding one API key that the API registers as an admin key of tenant `bootstrap_tenant` at
    # start-up (the local stack writes it, mode 0600, beside the Ray token). Unset: keys come only from
    # `python -m service.admin keys create`.
    bootstrap_key_file: Path | None = None
    bootstrap_tenant: str = "admin"
    # Quotas, per tenant (a tenant's own limits, set with `service.admin tenants set`, override these).
    # 4 concurrent jobs: a burst from one user queues in the store instead of in Ray, where it would delay
    # everyone's jobs in submission order.
    max_concurrent_jobs: int = Field(default=4, ge=1)
    # GPU workers held at once (num_workers of a use_gpu job); 8 = one 8-GPU node's worth of money per tenant.
    max_gpu_workers: int = Field(default=8, ge=0)
    # Requests per second each tenant key may send to one API process, and the burst it may send at once
    # (service.rate_limit; a tenant's own values override these; 0: unlimited; admin keys are never limited).
    # 50/s is far above what the SDK and CLI send (a wait polls once a second, a predict loop on one CPU replica
    # runs at ~35 images/s) and far below what one process can answer, so one tenant's loop cannot starve others.
    rate_limit_per_s: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    # Requests of one limited key worked on at once by one API process; the rest of a burst waits its turn, so
    # other keys never queue behind a whole burst. One: on two cores each more of a burst's requests at work
    # beside another key's adds to that one's latency (benchmarks/rate_limit.py). A prediction's turn ends when
    # it is sent to Serve, so one turn still lets a key's concurrent predictions all reach the replica's batch.
    rate_limit_in_flight: int = Field(default=1, ge=1)
    # The s3://bucket/prefix every tenant's keys may train on, besides their own uploads and their tenant's
    # own list (JSON list). Empty by default: a tenant's key reads only what is its own; admin keys read any
    # location (service.dataset_access).
    dataset_prefixes: list[S3Uri] = Field(default_factory=list)
    # Per-job dataset limits, enforced while fetching and validating: a typo'd prefix (a whole bucket) or an
    # absurd image fails early with a message instead of filling the disk or the memory.
    max_dataset_objects: int = Field(default=200_000, ge=1)
    max_dataset_bytes: int = Field(default=20 * 1024**3, ge=1)
    # Pillow's own decompression-bomb threshold is ~89 MP; 50 MP (e.g. 8660 x 5773) is a big photo already.
    max_image_pixels: int = Field(default=50_000_000, ge=1)

    # --- webhooks (service.notify) and MLflow (service.tracking) ---
    # Networks (JSON list of CIDRs) that webhooks may reach although they are loopback, link-local or private:
    # an operator's choice (a receiver inside the cluster). Empty: only public addresses.
    webhook_allowed_networks: list[str] = Field(default_factory=list)
    # One try's limit (connect and answer); a receiver that takes longer is retried like one that failed.
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # Tries per delivery, the first included; between them base, 2x base, 4x base … capped (10 tries: ~1.5 h).
    webhook_max_tries: int = Field(default=10, ge=1, le=50)
    webhook_retry_base_s: float = Field(default=10.0, gt=0)
    webhook_retry_max_s: float = Field(default=3600.0, gt=0)
    # How often the API looks for jobs that ended and deliveries that are due.
    webhook_poll_interval_s: float = Field(default=2.0, gt=0)
    # A sending API process that dies holds its deliveries this long before another one sends them.
    webhook_lease_s: float = Field(default=60.0, gt=0)
    # MLflow: unset (the default) turns the integration off. Set, every job is mirrored as a run of
    # `mlflow_experiment` and its model registered under `mlflow_model_name` ({name}: the job's name; {tenant}).
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "trainyard"
    mlflow_model_name: str = "{name}"
    # How often the API brings MLflow up to date with the store (seconds).
    mlflow_sync_interval_s: float = Field(default=5.0, gt=0)
    # How far back an API that starts mirroring reaches: jobs that ended longer ago are not mirrored (a day).
    mlflow_lookback_s: float = Field(default=86400.0, ge=0)

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # its ValueError names the bad entry
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'trainyard.db'}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.home / "cache"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
