"""The engine layer: settings, the candidates an entry gets, the measured choice and its accuracy gate,
OpenVINO's parity with ONNX Runtime, and what the service reports about its choice."""

from __future__ import annotations

import asyncio
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch import nn

from app.batching import MicroBatcher
from app.config import Settings
from app.main import create_app
from core.errors import DistillError
from engines.base import Engine, EngineSpec, TensorSpec
from engines.ort import OrtEngine
from engines.ov import OpenVinoEngine, openvino_version
from engines.select import REFERENCE, plan_candidates, psnr_db, select_engine
from tests.app_helpers import NATIVE, make_entry, png_bytes, wait_ready

needs_openvino = pytest.mark.skipif(openvino_version() is None, reason="openvino is not installed")
VARIANTS = {
    "fp32": {"file": "model.onnx", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
    "int8": {"file": "model.int8.onnx", "providers": ["CPUExecutionProvider"]},
}


def test_engine_settings():
    s = Settings.from_env(
        {
            "DISTILL_ENGINE": "OpenVINO",
            "DISTILL_OPENVINO_PRECISION": "BF16",
            "DISTILL_ENGINE_BUDGET_S": "2.5",
            "DISTILL_ENGINE_CACHE": "/var/cache/distill",
        }
    )
    assert (s.engine, s.openvino_precision, s.engine_budget_s) == ("openvino", "bf16", 2.5)
    assert s.engine_cache == Path("/var/cache/distill")
    assert Settings().engine == "auto" and Settings().variant_cpu == "auto"
    for env, message in (
        ({"DISTILL_ENGINE": "tensorflow"}, "DISTILL_ENGINE"),
        ({"DISTILL_OPENVINO_PRECISION": "fp16"}, "DISTILL_OPENVINO_PRECISION"),
        ({"DISTILL_ENGINE_BUDGET_S": "-1"}, "must be >= 0"),
    ):
        with pytest.raises(DistillError, match=message):
            Settings.from_env(env)


def labels(plan) -> list[str]:
    return [s.label for s in plan.specs]


def test_candidates_per_machine_and_settings():
    auto = plan_candidates(VARIANTS, engine="auto", ort_devices=["cpu"])
    assert labels(auto) == [
        "onnxruntime/cpu/int8",
        "onnxruntime/cpu/fp32",
        "openvino/cpu/int8",
        "openvino/cpu/bf16@fp32",
        "openvino/cpu/fp32",
    ]
    no_bf16 = plan_candidates(VARIANTS, engine="auto", ort_devices=["cpu"], bf16_native=False)
    assert "openvino/cpu/bf16@fp32" not in labels(no_bf16) and any("AVX-512 BF16" in n for n in no_bf16.notes)
    gpu = plan_candidates(VARIANTS, engine="onnxruntime", ort_devices=["tensorrt", "cuda"])
    assert labels(gpu) == [
        "onnxruntime/tensorrt/fp16@fp32",
        "onnxruntime/tensorrt/fp32",
        "onnxruntime/cuda/fp32",
    ]
    pinned = plan_candidates(
        {"fp32": VARIANTS["fp32"]}, engine="openvino", ort_devices=["cpu"], openvino="int8"
    )
    assert labels(pinned) == ["openvino/cpu/fp32"] and "no int8 variant" in pinned.notes[0]
    old = plan_candidates(VARIANTS, engine="onnxruntime", ort_devices=["cpu"], ort_cpu="fp32")
    assert labels(old) == ["onnxruntime/cpu/fp32"]  # DISTILL_VARIANT_CPU=fp32: the single engine of old
    no_ov = plan_candidates(VARIANTS, engine="auto", ort_devices=["cpu"], openvino_available=False)
    assert all(s.engine == "onnxruntime" for s in no_ov.specs)
    with pytest.raises(DistillError, match="openvino package is not installed"):
        plan_candidates(VARIANTS, engine="openvino", ort_devices=["cpu"], openvino_available=False)


class FakeEngine(Engine):
    """Tanh of the input, perturbed by ``noise``, taking ``ms`` a call; or failing to open."""

    def __init__(self, spec: EngineSpec, ms: float, noise: float = 0.0) -> None:
        self.spec, self.path, self.ms, self.noise = spec, Path("fake.onnx"), ms, noise

    def run(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.ms / 1000)
        return np.tanh(batch) + self.noise * np.sign(batch)

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        return [TensorSpec("input", "tensor(float)", ("batch", 3, 8, 8))], [
            TensorSpec("output", "tensor(float)", ())
        ]


OV_INT8 = EngineSpec("openvino", "cpu", "int8", "int8")
OV_BF16 = EngineSpec("openvino", "cpu", "fp32", "bf16")
ORT_INT8 = EngineSpec("onnxruntime", "cpu", "int8", "int8")
IMAGES = np.random.default_rng(0).uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)


def test_the_fastest_candidate_within_the_gate_is_chosen():
    fakes = {
        OV_INT8: FakeEngine(OV_INT8, 1, noise=0.2),  # fastest, but ~20 dB from fp32: refused
        OV_BF16: FakeEngine(OV_BF16, 2, noise=0.001),  # ~60 dB: passes
        ORT_INT8: FakeEngine(ORT_INT8, 80, noise=0.001),
    }  # passes the gate, cannot win: cut short

    def opener(spec: EngineSpec) -> Engine:
        if spec.engine == "onnxruntime" and spec.device == "cuda":
            raise DistillError("the cuda provider did not start")
        return fakes[spec]

    reference = FakeEngine(REFERENCE, 40)
    cuda = EngineSpec("onnxruntime", "cuda", "fp32", "fp32")
    sel = select_engine([OV_INT8, OV_BF16, REFERENCE, ORT_INT8, cuda], opener, reference, IMAGES, repeats=3)
    assert sel.engine is fakes[OV_BF16] and sel.reason.startswith("auto: fastest of 3 timed")
    by = {(c.engine, c.device, c.precision): c for c in sel.candidates}
    assert (
        by["openvino", "cpu", "int8"].status == "refused"
        and by["openvino", "cpu", "int8"].psnr_vs_fp32_db < 35
    )
    assert by["openvino", "cpu", "int8"].median_ms is None  # a refused candidate is not timed
    assert (
        by["openvino", "cpu", "bf16"].status == "chosen"
        and by["openvino", "cpu", "bf16"].psnr_vs_fp32_db > 50
    )
    reference_row = by["onnxruntime", "cpu", "fp32"]  # the reference, timed like the others, and cut short
    assert (
        reference_row.status == "slower"
        and reference_row.psnr_vs_fp32_db is None
        and reference_row.median_ms >= 40
    )
    assert by["onnxruntime", "cpu", "int8"].status == "slower"
    assert (
        by["onnxruntime", "cuda", "fp32"].status == "failed"
        and "did not start" in by["onnxruntime", "cuda", "fp32"].reason
    )


def test_the_budget_skips_the_rest_and_nothing_passing_is_an_error():
    fakes = {OV_BF16: FakeEngine(OV_BF16, 5), ORT_INT8: FakeEngine(ORT_INT8, 1)}
    sel = select_engine(
        [OV_BF16, ORT_INT8], fakes.__getitem__, FakeEngine(REFERENCE, 1), IMAGES, budget_s=0.0
    )
    assert sel.engine is fakes[OV_BF16] and [c.status for c in sel.candidates] == ["chosen", "skipped"]
    bad = {OV_BF16: FakeEngine(OV_BF16, 0, noise=0.5)}
    with pytest.raises(DistillError, match=r"no candidate engine passed: openvino/cpu/bf16: refused \("):
        select_engine([OV_BF16], bad.__getitem__, FakeEngine(REFERENCE, 0), IMAGES)


class Small(nn.Module):
    """The students' layer types, small: conv, instance norm, a transposed conv, tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.InstanceNorm2d(8),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 8, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 3, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "small.onnx"
    torch.manual_seed(0)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Small().eval(),
            torch.zeros(1, 3, 16, 16),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": axes},
        )
    return path


@needs_openvino
def test_openvino_matches_onnxruntime_and_caches_its_compilation(small_onnx, tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    expected = OrtEngine(REFERENCE, small_onnx).run(x)
    f32 = OpenVinoEngine(
        EngineSpec("openvino", "cpu", "fp32", "fp32"), small_onnx, (16, 16), cache_dir=tmp_path
    )
    np.testing.assert_allclose(f32.run(x), expected, atol=1e-4)
    assert f32.run(x[:1]).shape == (1, 3, 16, 16)  # the batch stays dynamic
    inputs, outputs = f32.signature()
    assert (
        inputs[0].type_name == "tensor(float)" and inputs[0].shape == (None, 3, 16, 16) and len(outputs) == 1
    )
    bf16 = OpenVinoEngine(
        EngineSpec("openvino", "cpu", "fp32", "bf16"), small_onnx, (16, 16), cache_dir=tmp_path
    )
    assert psnr_db(bf16.run(x), expected) > 35
    assert any((tmp_path / "openvino" / "fp32").iterdir())  # a restart loads the compiled model from here


@needs_openvino
def test_openvino_static_shapes_answer_as_the_dynamic_batch(small_onnx):
    """Batch 1 and a full batch run on static-shape models, a partial batch on the dynamic one: all what the
    dynamic-batch model alone answers (to float32 rounding)."""
    spec = EngineSpec("openvino", "cpu", "fp32", "fp32")
    static = OpenVinoEngine(spec, small_onnx, (16, 16), static_batches=(1, 4))
    dynamic = OpenVinoEngine(spec, small_onnx, (16, 16), static_batches=())
    assert sorted(static.static) == [1, 4] and not dynamic.static
    assert static.signature()[0][0].shape == (None, 3, 16, 16)  # the declared batch stays dynamic
    rng = np.random.default_rng(2)
    for n in (1, 3, 4):
        x = rng.uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32)
        np.testing.assert_allclose(static.run(x), dynamic.run(x), rtol=0, atol=1e-6)


@needs_openvino
def test_openvino_streams_run_batches_at_once_with_the_same_answers(small_onnx):
    """With two streams a lone batch runs on the latency build and, while it runs, others on a free stream of the
    throughput build (two at most at once, per shape); every batch answers what one stream does."""
    from concurrent.futures import ThreadPoolExecutor

    spec = EngineSpec("openvino", "cpu", "fp32", "fp32")
    one = OpenVinoEngine(spec, small_onnx, (16, 16), static_batches=(1, 4))
    two = OpenVinoEngine(spec, small_onnx, (16, 16), static_batches=(1, 4), streams=2)
    assert one.throughput is None and two.throughput is not None
    assert two.throughput.dynamic.qsize() == 2 and all(q.qsize() == 2 for q in two.throughput.static.values())
    assert two.latency.dynamic.qsize() == 1 and sorted(two.latency.static) == [1, 4]
    used = []
    for build in (two.latency, two.throughput):  # record which build each run takes
        build.free = lambda n, build=build, free=build.free: used.append(build) or free(n)  # type: ignore[method-assign]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_allclose(two.run(x), one.run(x), rtol=0, atol=1e-6)
    assert used == [two.latency]  # alone: every thread
    two._running = 1  # as while another batch runs
    np.testing.assert_allclose(two.run(x), one.run(x), rtol=0, atol=1e-6)
    assert used[-1] is two.throughput and two._running == 1
    two._running = 0
    xs = [
        np.random.default_rng(n).uniform(-1, 1, (n, 3, 16, 16)).astype(np.float32) for n in (1, 1, 3, 4, 4, 1)
    ]
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(two.run, xs * 4))
    for x, y in zip(xs * 4, answers, strict=True):
        np.testing.assert_allclose(y, one.run(x), rtol=0, atol=1e-6)
    assert two.latency.dynamic.qsize() == 1 and two.throughput.dynamic.qsize() == 2  # every request back
    with pytest.raises(DistillError, match="at least one stream"):
        OpenVinoEngine(spec, small_onnx, (16, 16), streams=0)


class BatchOfOne(nn.Module):
    """Declares a dynamic batch, but its graph reshapes to [1, 3, H, W]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 0.5).reshape(1, 3, 16, 16)


@needs_openvino
def test_a_static_batch_the_graph_cannot_take_is_left_dynamic(tmp_path):
    """The engine still loads (the service's batch check then serves it at batch 1, with its warning)."""
    path = tmp_path / "one.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            BatchOfOne(),
            torch.zeros(1, 3, 16, 16),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    engine = OpenVinoEngine(
        EngineSpec("openvino", "cpu", "fp32", "fp32"), path, (16, 16), static_batches=(1, 4)
    )
    assert sorted(engine.static) == [1]
    assert engine.run(np.ones((1, 3, 16, 16), np.float32)).shape == (1, 3, 16, 16)


@needs_openvino
def test_the_batcher_mixes_requests_on_static_and_dynamic_shapes(small_onnx):
    """Concurrent requests still share micro-batches (full ones on a static shape, the rest dynamic), each
    answered with its own image's output."""
    engine = OpenVinoEngine(
        EngineSpec("openvino", "cpu", "fp32", "fp32"), small_onnx, (16, 16), static_batches=(1, 4)
    )
    xs = [np.random.default_rng(i).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for i in range(7)]
    sizes: list[int] = []

    async def go() -> list:
        batcher = MicroBatcher(
            engine.run, max_batch=4, max_wait_s=0.2, queue_size=16, on_batch=lambda n, _: sizes.append(n)
        )
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(x) for x in xs))
        finally:
            await batcher.stop()

    results = asyncio.run(go())
    assert max(sizes) > 1 and sum(sizes) == len(xs)
    for x, r in zip(xs, results, strict=True):
        np.testing.assert_allclose(r.output, engine.run(x)[0], atol=1e-5)


def test_engines_refuse_a_batch_that_is_not_images(small_onnx, tmp_path):
    """A real error, not an assert (which ``python -O`` drops)."""
    engines = [OrtEngine(REFERENCE, small_onnx)]
    if openvino_version():
        engines.append(
            OpenVinoEngine(
                EngineSpec("openvino", "cpu", "fp32", "fp32"), small_onnx, (16, 16), cache_dir=tmp_path
            )
        )
    for engine in engines:
        for bad in (np.zeros((2, 1, 16, 16), np.float32), np.zeros((3, 16, 16), np.float32)):
            with pytest.raises(ValueError, match=r"\[N,3,H,W\]"):
                engine.run(bad)


def test_the_service_reports_its_engine_choice(tmp_path):
    make_entry(tmp_path, teacher=False)
    settings = Settings(
        model_zoo=tmp_path,
        warmup_runs=1,
        legacy_workers=0,
        engine_budget_s=5,
        engine_cache=tmp_path / "cache",
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        info = client.get("/models").json()["models"][0]
        chosen = [c for c in info["engine_candidates"] if c["status"] == "chosen"]
        assert len(chosen) == 1 and (chosen[0]["engine"], chosen[0]["precision"]) == (
            info["engine"],
            info["precision"],
        )
        assert info["engine_reason"].startswith("auto: fastest") and "sample image" in info["engine_reason"]
        engines = {c["engine"] for c in info["engine_candidates"]}
        assert engines == ({"onnxruntime", "openvino"} if openvino_version() else {"onnxruntime"})
        r = client.post("/transform", files={"image": ("f.png", png_bytes(), "image/png")})
        assert r.status_code == 200 and r.headers["x-engine"] == info["engine"]
        assert r.headers["x-precision"] == info["precision"]
        metrics = client.get("/metrics").text
        assert f'engine="{info["engine"]}"' in metrics and "distill_engine_candidate_milliseconds" in metrics
    pinned = settings.replace(engine="onnxruntime", variant_cpu="fp32")
    with TestClient(create_app(pinned)) as client:
        wait_ready(client)
        info = client.get("/models").json()["models"][0]
        assert (info["engine"], info["precision"], info["input_size"]) == (
            "onnxruntime",
            "fp32",
            [NATIVE, NATIVE],
        )
        assert [c["status"] for c in info["engine_candidates"]] == ["configured"]


def test_the_export_engine_table(small_onnx):
    from engines.measure import engine_table, format_table

    images = np.random.default_rng(2).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    rows = engine_table({"fp32": small_onnx}, (16, 16), images, repeats=1)
    assert all(
        set(r)
        == {"engine", "variant", "precision", "median_ms", "psnr_vs_fp32_db", "timed_size", "measured_on"}
        for r in rows
    )
    by = {(r["engine"], r["precision"]): r for r in rows}
    ref = by["onnxruntime", "fp32"]
    assert (
        ref["psnr_vs_fp32_db"] is None
        and ref["timed_size"] == [16, 16]
        and "CPUExecutionProvider" in ref["measured_on"]
    )
    if openvino_version():
        assert (
            by["openvino", "fp32"]["psnr_vs_fp32_db"] > 80 and "AVX2" in by["openvino", "fp32"]["measured_on"]
        )
    assert "reference" in "\n".join(format_table(rows))
