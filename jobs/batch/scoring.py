"""The model side of a batch actor: the published artifact loaded as a Serve replica loads it, and top-k scoring.

Kept apart from `jobs.batch.predictor` so that the driver, which hands the actor class to Ray Data, never
imports torch: only the actors do.
"""

from __future__ import annotations

import torch

from core.artifact import load_artifact
from core.images import InvalidImage
from serving import inference


class Scorer:
    def __init__(self, artifact: bytes, top_k: int, use_gpu: bool) -> None:
        meta, model = load_artifact(artifact)
        self.meta = meta
        self.top_k = min(top_k, len(meta.classes))
        self.device = torch.device("cuda" if use_gpu else "cpu")
        # Ray sets OMP_NUM_THREADS to the actor's CPUs, which torch reads at import: one thread per CPU actor.
        self.model = inference.prepare(model.to(self.device), channels_last=True, graph_size=meta.image_size)

    def preprocess(self, data: bytes) -> torch.Tensor | str:
        """Normalized rows [1, C, H, W] as training validates and Serve serves the image, or why it cannot be."""
        try:
            return inference.preprocess(data, self.meta.image_size, self.meta.normalization)
        except InvalidImage as exc:
            return str(exc)

    def score(self, rows: list[torch.Tensor]) -> tuple[list[list[str]], list[list[float]]]:
        """The top-k labels and probabilities of each image, most probable first."""
        x = torch.cat(rows).to(self.device)
        top = torch.topk(inference.forward(self.model, x, channels_last=True).cpu(), self.top_k)
        labels = [[self.meta.classes[i] for i in indices] for indices in top.indices.tolist()]
        return labels, [[round(p, 6) for p in values] for values in top.values.tolist()]
