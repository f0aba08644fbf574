"""The classifier deployment: decode → batch (per model) → predict → top-k, for every deployed model.

A request names its model with Serve's multiplexing header (`serve_multiplexed_model_id`), so one
deployment serves all models: replicas load models on demand (LRU), Serve routes requests to replicas
that already hold the model, and `@serve.batch` gathers concurrent requests into one forward pass.

    serve run serving.app:build_app        # or through a Serve config file / a KubeRay RayService
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application
from starlette.requests import Request
from starlette.responses import JSONResponse

from core.artifact import ArtifactMeta, load_artifact
from core.images import InvalidImage, decode_image, eval_tensor, normalize
from core.s3 import s3_client
from core.settings import get_settings
from serving.registry import ArtifactMissing, ModelNotFound, pointer_uri, read_artifact, read_pointer
from serving.replica_models import ReplicaModels

# An LRU of 4 models per replica: 4 EfficientNet-Lite0 weights are ~80 MB beside a ~400 MB replica, and more
# models than that are served by more replicas (Serve routes each model to the replicas that hold it).
MAX_MODELS_PER_REPLICA = 4


class AppArgs(BaseModel):
    """Arguments of `build_app` (also accepted from a Serve config file's `args`)."""

    max_batch_size: int = Field(default=16, ge=1, le=256)
    batch_wait_timeout_s: float = Field(default=0.005, ge=0, le=1)
    # One thread per replica: two torch threads per process collapse when training shares the cores.
    num_threads: int = Field(default=1, ge=1, le=64)
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    target_ongoing_requests: float = Field(default=8, gt=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    # Serve's defaults: load must last 30 s before a replica is added, averaged over a 30 s window of
    # ongoing-request counts that replicas push every 10 s. Tests shorten all three.
    upscale_delay_s: float = Field(default=30.0, ge=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)
    # How often each replica checks that the models it holds are still deployed (DELETE frees them then).
    pointer_check_interval_s: float = Field(default=2.0, gt=0)


@dataclass
class LoadedModel:
    meta: ArtifactMeta
    model: torch.nn.Module


def error(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "field": field}}, status_code=status)


class ClassifierServer:
    def __init__(self, args: AppArgs) -> None:
        torch.set_num_threads(args.num_threads)
        self.settings = get_settings()
        self.s3 = s3_client(self.settings)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.models = ReplicaModels(self, self.s3, self.settings, args.pointer_check_interval_s)
        self._loading: dict[str, asyncio.Future[LoadedModel]] = {}
        # serve.batch's type hints cover single-argument functions only, hence the ignores below.
        self._predict_batch.set_max_batch_size(args.max_batch_size)  # type: ignore[attr-defined,misc]
        self._predict_batch.set_batch_wait_timeout_s(args.batch_wait_timeout_s)  # type: ignore[attr-defined,misc]

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
        meta, model = load_artifact(read_artifact(self.s3, pointer.artifact_uri))
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return LoadedModel(meta=meta, model=model)

    async def warm(self) -> list[str]:
        """Load the request's model now, so the first prediction does not pay for it; returns its classes."""
        loaded = await self.get_model(serve.get_multiplexed_model_id())
        return loaded.meta.classes

    async def stats(self) -> dict[str, object]:
        """This replica's models, loads, evictions and RSS (for operators and tests, through a handle)."""
        return self.models.stats().model_dump()

    async def __call__(self, request: Request) -> JSONResponse:
        model_id = serve.get_multiplexed_model_id()
        if not model_id:
            return error(400, "model_id_missing", "set the serve_multiplexed_model_id header", "model_id")
        try:
            top_k = int(request.query_params.get("top_k", "5"))
        except ValueError:
            return error(422, "invalid_request", "top_k must be an integer between 1 and 100", "top_k")
        if not 1 <= top_k <= 100:
            return error(422, "invalid_request", "top_k must be between 1 and 100", "top_k")
        try:
            loaded = await self.get_model(model_id)
        except ModelNotFound:
            where = pointer_uri(self.settings, model_id)
            return error(404, "model_not_found", f"no deployed model with id {model_id!r} (no pointer at {where})")
        except ArtifactMissing as exc:
            return error(
                410,
                "model_artifact_missing",
                f"model {model_id!r} cannot answer: its artifact {exc.uri} is missing from the artifact store; "
                "restore the object or retrain the model",
                "model_id",
            )
        body = await request.body()
        try:
            image = await asyncio.to_thread(decode_image, body)
        except InvalidImage as exc:
            return error(415, "invalid_image", f"{exc}; send a JPEG, PNG, GIF, BMP, TIFF or WebP image", "body")
        tensor = eval_tensor(image, loaded.meta.image_size)
        probabilities = await self._predict_batch(model_id, tensor)  # type: ignore[call-arg,misc]
        top = torch.topk(probabilities, k=min(top_k, len(loaded.meta.classes)))
        predictions = [
            {"label": loaded.meta.classes[i], "probability": round(p, 6)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        return JSONResponse({"model_id": model_id, "predictions": predictions})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)  # type: ignore[arg-type,misc]
    async def _predict_batch(self, model_ids: list[str], images: list[torch.Tensor]) -> list[torch.Tensor]:  # type: ignore[misc]
        results: list[torch.Tensor | None] = [None] * len(images)
        for model_id in dict.fromkeys(model_ids):  # one forward pass per model in the batch
            loaded = await self.get_model(model_id)
            members = [i for i, m in enumerate(model_ids) if m == model_id]
            batch = torch.stack([images[i] for i in members])
            # The forward runs off the event loop so the replica keeps accepting (and batching) requests.
            probs = await asyncio.to_thread(self._forward, loaded, batch)
            for row, i in enumerate(members):
                results[i] = probs[row]
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def _forward(self, loaded: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
        x = normalize(batch, loaded.meta.normalization).to(self.device)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return loaded.model(x).float().softmax(1).cpu()


# Wrapped after the class is bound to its module name, so Ray pickles it by reference, not by value.
ClassifierDeployment = serve.deployment(ClassifierServer)


def build_app(args: AppArgs | dict[str, object] | None = None) -> Application:
    """The typed app builder: works with `serve run serving.app:build_app`, config files and RayService."""
    args = AppArgs.model_validate(args or {})
    settings = get_settings()
    return ClassifierDeployment.options(  # type: ignore[attr-defined]
        ray_actor_options={
            "num_cpus": settings.serve_replica_cpus,
            "num_gpus": settings.serve_replica_gpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(args.num_threads), "MALLOC_ARENA_MAX": "1"}},
        },
        autoscaling_config={
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas or settings.serve_max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "downscale_delay_s": args.downscale_delay_s,
            "upscale_delay_s": args.upscale_delay_s,
            "look_back_period_s": args.look_back_period_s,
            "metrics_interval_s": args.metrics_interval_s,
        },
        max_ongoing_requests=max(32, args.max_batch_size * 2),
    ).bind(args)
