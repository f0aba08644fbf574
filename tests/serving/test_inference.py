"""The replica's hot path without Ray: thread count, preprocessing with and without TTA, the forward's layout."""

from __future__ import annotations

import gc
import io
import os
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from core.backbones import TF_SCALING, build_classifier
from core.images import InvalidImage, decode_image, eval_tensor, normalize
from jobs.data import load_rgb
from serving import inference
from serving.graphs import Graphs


def png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 4, size[1]))  # a white left edge: the mirror differs
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_threads_follow_the_cpus_the_replica_owns() -> None:
    assert inference.replica_threads(3.0) == 3
    # Nothing reserved (one machine): all but one of the CPUs it may run on (the proxy, API and decoding
    # share the node), never zero.
    assert inference.replica_threads(0.0) == max(1, len(os.sched_getaffinity(0)) - 1)
    assert inference.replica_threads(None) == max(1, len(os.sched_getaffinity(0)) - 1)
    assert inference.replica_threads(0.5) >= 1


def test_a_pool_thread_runs_torch_with_the_threads_it_was_given_at_normal_priority() -> None:
    from concurrent.futures import ThreadPoolExecutor

    before = torch.get_num_threads()
    with ThreadPoolExecutor(1, initializer=inference.start_pool_thread, initargs=(1,)) as pool:
        settings = pool.submit(inference.thread_settings).result()
    torch.set_num_threads(before)  # torch's count is also process-wide: leave the test process as it was
    assert settings["torch_threads"] == 1
    # Ray starts workers at nice 15; as root (this machine) the thread gets back to 0, elsewhere it may not.
    if os.geteuid() == 0:
        assert settings["nice"] == 0


def test_preprocess_gives_one_row_or_the_image_and_its_mirror() -> None:
    plain = inference.preprocess(png((200, 30, 30)), 32, TF_SCALING)
    doubled = inference.preprocess(png((200, 30, 30)), 32, TF_SCALING, tta=True)
    assert plain.shape == (1, 3, 32, 32) and plain.dtype == torch.float32
    assert doubled.shape == (2, 3, 32, 32)
    assert torch.equal(doubled[0], plain[0])
    assert torch.equal(doubled[1], plain[0].flip(-1)) and not torch.equal(doubled[1], plain[0])
    with pytest.raises(InvalidImage):
        inference.preprocess(b"not an image", 32, TF_SCALING)


def test_a_large_photo_reaches_the_model_as_the_validation_set_saw_it(tmp_path: Path) -> None:
    # A camera-sized JPEG, noisy enough that decoding at full size and then resizing gives other pixels than the
    # DCT-scaled decode training uses (jobs.data.load_rgb): serving must take the same path.
    pixels = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    served = inference.preprocess(path.read_bytes(), 64, TF_SCALING)
    validated = normalize(eval_tensor(load_rgb(path, 64), 64), TF_SCALING).unsqueeze(0)
    assert torch.equal(served, validated)
    full_size = normalize(eval_tensor(decode_image(path.read_bytes()), 64), TF_SCALING).unsqueeze(0)
    assert not torch.equal(served, full_size)  # the check above can tell the two decodes apart


def test_channels_last_the_graph_and_batching_change_no_answer() -> None:
    torch.manual_seed(0)
    images = [png((200, 30, 30)), png((30, 200, 30)), png((30, 30, 200))]
    x = torch.cat([inference.preprocess(image, 32, TF_SCALING) for image in images])
    contiguous = build_classifier("efficientnet_lite0", 3, weights=None).eval()
    fresh = build_classifier("efficientnet_lite0", 3, weights=None).eval()
    fresh.load_state_dict(contiguous.state_dict())
    # What a replica runs on CPU: NHWC, a copy of a graph traced at batch 1; asked here for a batch of 3 and of 1.
    nhwc = inference.prepare(fresh, channels_last=True, graph_size=32)
    assert isinstance(nhwc, torch.jit.ScriptModule)

    batched = inference.forward(nhwc, x, channels_last=True)
    assert torch.allclose(batched, inference.forward(contiguous, x, channels_last=False), atol=1e-5)
    for row, single in zip(batched, x.split(1), strict=True):
        assert torch.allclose(row, inference.forward(nhwc, single, channels_last=True)[0], atol=1e-5)
    assert torch.allclose(batched.sum(1), torch.ones(3))


def test_models_of_one_shape_share_one_trace_and_answer_with_their_own_weights() -> None:
    graphs = Graphs(max_shapes=2)
    x = torch.randn(2, 3, 32, 32)

    def graph_and_eager(classes: int, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
        torch.manual_seed(seed)
        model = inference.prepare(build_classifier("efficientnet_lite0", classes, weights=None).eval(), True)
        return graphs.graph_of(model, 32, channels_last=True), model

    for seed in (1, 2, 3):
        graph, eager = graph_and_eager(2, seed)
        assert isinstance(graph, torch.jit.ScriptModule)
        expected = inference.forward(eager, x, channels_last=True)
        assert torch.allclose(inference.forward(graph, x, channels_last=True), expected, atol=1e-5)
    assert len(graphs) == 1  # three models, one trace
    graph, eager = graph_and_eager(3, 4)  # another class count: another shape
    assert isinstance(graph, torch.jit.ScriptModule) and len(graphs) == 2
    graph, eager = graph_and_eager(4, 5)  # past max_shapes: served eagerly, nothing more traced
    assert graph is eager and len(graphs) == 2


def test_loading_models_through_the_lru_does_not_grow_the_process() -> None:
    # TorchScript never frees what it traced (pytorch#35600): tracing every load grew a process by ~13 MB a
    # model (~26 MB frozen). Ten loads of one shape, four kept (the replica's LRU), must stay well below that.
    graphs = Graphs()
    process = psutil.Process()
    kept: list[torch.nn.Module] = []

    def load() -> None:
        model = build_classifier("efficientnet_lite0", 2, weights=None).eval()
        kept.append(graphs.graph_of(inference.prepare(model, True), 32, channels_last=True))
        del kept[:-4]
        gc.collect()

    for _ in range(4):  # the first trace, and the LRU filled
        load()
    before = process.memory_info().rss
    for _ in range(10):
        load()
    grown_mib = (process.memory_info().rss - before) / 2**20
    assert grown_mib < 50, f"ten loads grew the process by {grown_mib:.0f} MiB"


def test_a_model_that_cannot_be_traced_is_served_eagerly() -> None:
    class DictOutput(torch.nn.Module):  # the tracer refuses dict outputs
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"logits": self.linear(x.mean((2, 3)))}

    model = DictOutput().eval()
    assert inference.prepare(model, channels_last=False, graph_size=8) is model


def test_tta_averages_each_image_with_its_mirror() -> None:
    probs = torch.tensor([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9], [0.3, 0.7]])
    assert torch.allclose(inference.merge_tta(probs, tta=True), torch.tensor([[0.7, 0.3], [0.2, 0.8]]))
    assert inference.merge_tta(probs, tta=False) is probs
    assert inference.top_k(torch.tensor([0.2, 0.7, 0.1]), ["a", "b", "c"], 2) == [
        {"label": "b", "probability": 0.7},
        {"label": "a", "probability": 0.2},
    ]
