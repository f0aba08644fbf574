"""Models as TorchScript graphs on CPU: one trace per model shape, and each model a copy with its own weights.

Why a graph: eager PyTorch takes the GIL back between every op (a few hundred per forward), and a replica has
other Python threads (Serve's event loops and metrics pushers, the decode pool) that hold it meanwhile.
EfficientNet-Lite0 at batch 1 on one thread took 33 ms alone and 1,013 ms beside one busy Python thread; as a
TorchScript graph, which runs in C++ without the GIL, 25 and 92 ms (benchmarks/forward.py).

Why one trace per shape and not per model: TorchScript keeps every graph it traces in one process-wide
compilation unit and never frees it (pytorch/pytorch#35600, #86537). Tracing each model that a replica loads
grew its memory by ~13 MB a load, and by ~26 MB frozen (a frozen graph holds its weights as constants), without
bound as models pass through the LRU. A copy of a traced module shares its graph and holds only its own
parameters: ten loads through an LRU of four stay within 50 MB (tests/serving/test_inference.py; 182 MB with a
trace per load). Models have the same shape when their module tree (`repr`: layer types and settings) and their
tensors' names and shapes match, so one graph serves every model of an architecture, class count and image
size; past `MAX_SHAPES` shapes a replica serves new ones eagerly, so its graphs stay bounded too.

Freezing (constant weights, batch norm folded) was faster still (18 against 25 ms alone) but cannot be shared
between models: it is what grew 26 MB a load. Measured and not taken: `torch.compile` ran as fast alone (20 ms
at batch 1) but took 371 ms beside the busy thread (its wrapper launches kernels from Python) and 57 s to
compile on 2 cores, where a replica loads models on demand. TorchScript is deprecated upstream (a FutureWarning
in the pinned torch 2.14): a model the tracer refuses is served eagerly. GPUs keep eager: this path has not been
measured on one.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import warnings

import torch

logger = logging.getLogger(__name__)

# Distinct model shapes (architecture, classes, image size) one replica traces; each keeps one model's weights.
MAX_SHAPES = 8
# The profiling executor runs a graph's first calls unoptimised (~100 ms, then ~40, then steady): a model load
# pays them, not the first requests.
WARM_CALLS = 3


class Graphs:
    """The traced graph of each model shape this process has seen; `graph_of` gives a model its own copy."""

    def __init__(self, max_shapes: int = MAX_SHAPES) -> None:
        self.max_shapes = max_shapes
        self._traced: dict[str, torch.jit.ScriptModule] = {}
        self._lock = threading.Lock()  # replicas load models in several threads; trace each shape once

    def graph_of(self, model: torch.nn.Module, size: int, channels_last: bool) -> torch.nn.Module:
        """`model` as a graph at `size` px, or `model` itself when it cannot be traced or too many shapes were."""
        example = torch.zeros(1, 3, size, size, device=next(model.parameters()).device)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        key = shape_key(model, size, channels_last)
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation: see the module's doc
                traced = self._traced_for(key, model, example)
                if traced is None:
                    return model
                graph = copy.deepcopy(traced)
                graph.load_state_dict(model.state_dict())
                for _ in range(WARM_CALLS):
                    graph(example)
        except Exception as exc:  # tracing runs the model's own Python: anything it raises means "serve it eagerly"
            logger.warning(
                "the model cannot run as a TorchScript graph (%s: %s); serving it eagerly", type(exc).__name__, exc
            )
            return model
        return graph

    def _traced_for(self, key: str, model: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
        with self._lock:
            traced = self._traced.get(key)
            if traced is None:
                if len(self._traced) >= self.max_shapes:
                    logger.info("%d model shapes are traced already; serving a new one eagerly", self.max_shapes)
                    return None
                traced = self._traced[key] = torch.jit.trace(model.eval(), example, check_trace=False)
            return traced

    def __len__(self) -> int:
        return len(self._traced)


def shape_key(model: torch.nn.Module, size: int, channels_last: bool) -> str:
    """What a traced graph depends on: the module tree and its settings, tensor names and shapes, input layout."""
    tensors = [(name, tuple(t.shape), str(t.dtype)) for name, t in model.state_dict().items()]
    described = f"{model!r}|{tensors}|{size}|{channels_last}"
    return hashlib.sha256(described.encode()).hexdigest()


# One per process: TorchScript's compilation unit, which this bounds, is one per process too.
GRAPHS = Graphs()
