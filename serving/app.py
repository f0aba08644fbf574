"""The classifier deployment: read → preprocess (bounded pool) → batch (per model) → forward → top-k, for every model.

A request names its model with Serve's multiplexing header (`serve_multiplexed_model_id`), so one
deployment serves all models: replicas load models on demand (LRU), Serve routes requests to replicas
that already hold the model, and a batcher (`serving/batcher.py`) gathers concurrent requests into one forward pass.

    POST /classify          one image: the raw body or multipart field `file`
    POST /classify/batch    several images: multipart, one file part per image (field `files`), in order
    ?top_k=5&tta=false      on both

The hot path keeps the event loop free for accepting and batching: decoding and resizing run in a pool as
wide as the replica's torch threads, the forward in its own thread (on CPU, each model as a TorchScript
graph that needs no GIL: `serving/graphs.py`). A batch starts the moment the replica
is free (no batch wait; `serving/batcher.py`, not `@serve.batch`, which formed batches of one): requests that
arrive during a forward form the next batch, so a lone request never waits for company and a busy replica
still runs full batches. Every answer says where its time went.

    serve run serving.app:build_app        # or through a Serve config file / a KubeRay RayService
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
import torch
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.artifact import ArtifactMeta, load_artifact
from core.images import InvalidImage
from core.limits import is_multipart, type_refusal, upload_limit
from core.runtime_env import TORCH_MALLOC_ENV
from core.s3 import s3_client
from core.settings import Settings, get_settings
from serving import inference
from serving.batcher import DrainingBatcher
from serving.registry import ArtifactMissing, ModelNotFound, pointer_uri, read_artifact, read_pointer
from serving.replica_models import ReplicaModels

# An LRU of 4 models per replica: 4 EfficientNet-Lite0 weights are ~80 MB beside a ~400 MB replica, and more
# models than that are served by more replicas (Serve routes each model to the replicas that hold it).
MAX_MODELS_PER_REPLICA = 4
DEFAULT_TOP_K = 5


class AppArgs(BaseModel):
    """Arguments of `build_app` (also accepted from a Serve config file's `args`)."""

    # Rows in one forward (a `tta=true` image counts twice). 32 was the fastest batch of the raw model on 2
    # cores (benchmarks/README.md, "Process settings"); a predict:batch request must fit in one.
    max_batch_size: int = Field(default=32, ge=1, le=256)
    # 0: an idle replica never waits for a batch to fill; while a forward runs the queue fills by itself.
    batch_wait_timeout_s: float = Field(default=0.0, ge=0, le=1)
    # Torch threads; None: the CPUs Ray gave the replica, or the node's CPUs when it reserved none.
    num_threads: int | None = Field(default=None, ge=1, le=64)
    # NHWC is faster for these convnets on CPU too (benchmarks/README.md, "Process settings").
    channels_last: bool = True
    # On CPU, each model runs as a TorchScript graph (serving/graphs.py: the forward does not wait for the
    # GIL between ops). False: eager PyTorch.
    graph: bool = True
    # Replicas and their queues. None: the deployment's setting (`serve_<field>` in core/settings.py, where each
    # default and its reason are written once); a Serve config file or a test may override any of them here.
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    max_queued_requests: int | None = Field(default=None, ge=1)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    downscale_delay_s: float | None = Field(default=None, ge=0)
    target_ongoing_requests: float = Field(default=8, gt=0)
    # Serve's defaults: load must last 30 s before a replica is added, averaged over a 30 s window of
    # ongoing-request counts that replicas push every 10 s. Tests shorten all three.
    upscale_delay_s: float = Field(default=30.0, ge=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)
    # How often each replica checks that the models it holds are still deployed (DELETE frees them then).
    pointer_check_interval_s: float = Field(default=2.0, gt=0)

    def with_settings(self, settings: Settings) -> AppArgs:
        """These arguments with every field left unset taken from the deployment's `serve_*` settings."""
        unset = [name for name in _FROM_SETTINGS if getattr(self, name) is None]
        return self.model_copy(update={name: getattr(settings, f"serve_{name}") for name in unset})


_FROM_SETTINGS = ("max_ongoing_requests", "max_queued_requests", "min_replicas", "max_replicas", "downscale_delay_s")


@dataclass
class LoadedModel:
    meta: ArtifactMeta
    model: torch.nn.Module

    @property
    def version(self) -> str:
        """The job whose artifact answers: what changes when a model id is pointed at a newer training run."""
        return self.meta.job_id


@dataclass
class BatchItem:
    """One request's rows waiting for a forward pass."""

    model_id: str
    loaded: LoadedModel
    rows: torch.Tensor
    enqueued: float


@dataclass
class BatchResult:
    probs: torch.Tensor
    queue_s: float
    inference_s: float
    batch_size: int


class RequestError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise RequestError(422, "invalid_request", f"{name} must be true or false, got {value!r}", name)


def _top_k(value: str | None) -> int:
    try:
        top_k = int(value) if value is not None else DEFAULT_TOP_K
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= 100:
        raise RequestError(422, "invalid_request", f"top_k must be an integer from 1 to 100, got {value!r}", "top_k")
    return top_k


class ClassifierServer:
    def __init__(self, args: AppArgs) -> None:
        self.args = args
        self.settings = get_settings()
        self.s3 = s3_client(self.settings)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        self.threads = args.num_threads or inference.replica_threads(assigned)
        torch.set_num_threads(self.threads)
        inference.serve_at_normal_priority()
        # Bounded: as many decoders as torch threads; max_ongoing_requests bounds what waits for them.
        self.preprocess_pool = ThreadPoolExecutor(
            self.threads, "preprocess", initializer=inference.start_pool_thread, initargs=(self.threads,)
        )
        # One forward at a time, in one thread that keeps torch's thread pool warm.
        self.forward_pool = ThreadPoolExecutor(
            1, "forward", initializer=inference.start_pool_thread, initargs=(self.threads,)
        )
        self.batcher = DrainingBatcher(
            self._run_batch, args.max_batch_size, lambda item: len(item.rows), args.batch_wait_timeout_s
        )
        self.models = ReplicaModels(self, self.s3, self.settings, args.pointer_check_interval_s)
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> LoadedModel:
        self.models.before_load()
        # A load outlives the request that started it: when the client gives up (the proxy then cancels the
        # request), the load goes on and the retry picks it up, instead of starting over and timing out again.
        loading = self._loading.get(model_id)
        if loading is None:
            loading = self._loading[model_id] = asyncio.ensure_future(asyncio.to_thread(self._load, model_id))
            loading.add_done_callback(lambda _: self._loading.pop(model_id, None))
        loaded = await asyncio.shield(loading)
        self.models.after_load(model_id)
        return loaded

    def _load(self, model_id: str) -> LoadedModel:
        pointer = read_pointer(self.s3, self.settings, model_id)
        meta, classifier = load_artifact(read_artifact(self.s3, pointer.artifact_uri))
        graph_size = meta.image_size if self.args.graph else None
        model = inference.prepare(classifier.to(self.device), self.args.channels_last, graph_size)
        return LoadedModel(meta=meta, model=model)

    async def warm(self) -> list[str]:
        """Load the request's model now, so the first prediction does not pay for it; returns its classes."""
        loaded = await self.get_model(serve.get_multiplexed_model_id())
        return loaded.meta.classes

    async def stats(self) -> dict[str, object]:
        """This replica's models, loads, evictions, RSS, torch threads and niceness (for operators and tests)."""
        # Asked of the forward thread itself: its thread count and priority are what the forwards run with.
        forward = await asyncio.get_running_loop().run_in_executor(self.forward_pool, inference.thread_settings)
        return self.models.stats().model_dump() | forward

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            return await self._predict(request, time.perf_counter())
        except RequestError as exc:
            return error(exc.status, exc.code, exc.message, exc.field)

    async def _predict(self, request: Request, received: float) -> JSONResponse:
        batch = request.url.path.rstrip("/").endswith("/batch")
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            raise RequestError(400, "model_id_missing", "set the serve_multiplexed_model_id header", "model_id")
        top_k = _top_k(request.query_params.get("top_k"))
        tta = _flag(request.query_params.get("tta"), "tta")
        images = await self._read_images(request, batch)
        rows_per_image = 2 if tta else 1
        if len(images) * rows_per_image > self.args.max_batch_size:
            raise RequestError(
                413,
                "too_many_images",
                f"{len(images)} images{' with tta' if tta else ''} exceed one forward pass; send at most "
                f"{self.args.max_batch_size // rows_per_image} per request",
                "files",
            )
        loaded = await self._model(model_id)
        read = time.perf_counter()
        rows = await self._preprocess(images, loaded.meta, tta, batch)
        preprocessed = time.perf_counter()
        item = BatchItem(model_id=model_id, loaded=loaded, rows=rows, enqueued=preprocessed)
        result = await self.batcher.submit(item)
        probs = inference.merge_tta(result.probs, tta)
        answers = [inference.top_k(p, loaded.meta.classes, top_k) for p in probs]
        body: dict[str, Any] = {"model_id": model_id, "model_version": loaded.version}
        if batch:
            body["results"] = [{"predictions": predictions} for predictions in answers]
        else:
            body["predictions"] = answers[0]
        body["batch_size"] = result.batch_size
        body["timing_ms"] = {
            "preprocess": _ms(preprocessed - read),
            "queue": _ms(result.queue_s),
            "inference": _ms(result.inference_s),
            "replica": _ms(time.perf_counter() - received),
        }
        return JSONResponse(body)

    async def _model(self, model_id: str) -> LoadedModel:
        try:
            return await self.get_model(model_id)
        except ModelNotFound:
            where = pointer_uri(self.settings, model_id)
            raise RequestError(
                404, "model_not_found", f"no deployed model with id {model_id!r} (no pointer at {where})", "model_id"
            ) from None
        except ArtifactMissing as exc:
            raise RequestError(
                410,
                "model_artifact_missing",
                f"model {model_id!r} cannot answer: its artifact {exc.uri} is missing from the artifact store; "
                "restore the object or retrain the model",
                "model_id",
            ) from None

    async def _read_images(self, request: Request, batch: bool) -> list[bytes]:
        """The request's images; size and type checked here too, for clients that call Serve directly."""
        limit = self.settings.max_image_bytes
        max_images = self.settings.max_batch_images if batch else 1
        content_type = request.headers.get("content-type", "")
        refusal = type_refusal(content_type, batch)
        if refusal is not None:
            raise RequestError(415, "unsupported_media_type", refusal, "content-type")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > upload_limit(limit, max_images):
            raise RequestError(
                413, "payload_too_large", f"the request is {declared} bytes; the limit is {limit} per image", "body"
            )
        if not is_multipart(content_type):
            images = [await request.body()]
        else:
            async with request.form(max_files=max_images + 1) as form:
                parts = [v for k, v in form.multi_items() if isinstance(v, UploadFile) and (batch or k == "file")]
                images = [await part.read() for part in parts]
        if len(images) > max_images:
            raise RequestError(413, "too_many_images", f"send at most {max_images} images per request", "files")
        for i, image in enumerate(images):
            if len(image) > limit:
                field = f"files[{i}]" if batch else "body"
                raise RequestError(
                    413, "payload_too_large", f"the image is {len(image)} bytes; the limit is {limit}", field
                )
        if not images or not all(images):
            what = "one file part per image in field 'files'" if batch else "the image as the body or as field 'file'"
            raise RequestError(422, "empty_body", f"no image in the request; send {what}", "files" if batch else "body")
        return images

    async def _preprocess(self, images: list[bytes], meta: ArtifactMeta, tta: bool, batch: bool) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        done = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self.preprocess_pool, inference.preprocess, image, meta.image_size, meta.normalization, tta
                )
                for image in images
            ),
            return_exceptions=True,
        )
        for i, outcome in enumerate(done):
            if isinstance(outcome, InvalidImage):
                field = f"files[{i}]" if batch else "body"
                raise RequestError(
                    422, "invalid_image", f"{outcome}; send a JPEG, PNG, GIF, BMP, TIFF or WebP image", field
                )
            if isinstance(outcome, BaseException):
                raise outcome
        return torch.cat([t for t in done if isinstance(t, torch.Tensor)])

    async def _run_batch(self, items: list[BatchItem]) -> list[BatchResult]:
        results: list[BatchResult | None] = [None] * len(items)
        loop = asyncio.get_running_loop()
        for model_id in dict.fromkeys(item.model_id for item in items):  # one forward pass per model
            members = [i for i, item in enumerate(items) if item.model_id == model_id]
            x = torch.cat([items[i].rows for i in members]).to(self.device)
            began = time.perf_counter()
            model = items[members[0]].loaded.model
            probs = await loop.run_in_executor(self.forward_pool, inference.forward, model, x, self.args.channels_last)
            took = time.perf_counter() - began
            for i, part in zip(members, probs.cpu().split([len(items[i].rows) for i in members]), strict=True):
                results[i] = BatchResult(part, began - items[i].enqueued, took, len(x))
        return [r for r in results if r is not None]


# Wrapped after the class is bound to its module name, so Ray pickles it by reference, not by value.
ClassifierDeployment = serve.deployment(ClassifierServer)


def replica_actor_options(settings: Settings) -> dict[str, Any]:
    """What each replica asks Ray for: its CPUs and GPUs, and one unit of `serve_resource` when set, so that
    replicas run only on the nodes offering it (a serving node group) and never on the head or a training node."""
    options: dict[str, Any] = {
        "num_cpus": settings.serve_replica_cpus,
        "num_gpus": settings.serve_replica_gpus,
        "runtime_env": {"env_vars": dict(TORCH_MALLOC_ENV)},
    }
    if settings.serve_resource:
        options["resources"] = {settings.serve_resource: 1}
    return options


def build_app(args: AppArgs | dict[str, object] | None = None) -> Application:
    """The typed app builder: works with `serve run serving.app:build_app`, config files and RayService."""
    settings = get_settings()
    args = AppArgs.model_validate(args or {}).with_settings(settings)
    return ClassifierDeployment.options(  # type: ignore[attr-defined]
        ray_actor_options=replica_actor_options(settings),
        autoscaling_config={
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "downscale_delay_s": args.downscale_delay_s,
            "upscale_delay_s": args.upscale_delay_s,
            "look_back_period_s": args.look_back_period_s,
            "metrics_interval_s": args.metrics_interval_s,
        },
        max_ongoing_requests=args.max_ongoing_requests,
        # Past this many waiting at the proxy, Serve answers 503 with Retry-After instead of queueing forever.
        max_queued_requests=args.max_queued_requests,
        backpressure_config={"retry_after_s": 1},
    ).bind(args)
