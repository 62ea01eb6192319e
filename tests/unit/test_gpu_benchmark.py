"""benchmarks/gpu_benchmark.py on the CPU provider (``--device cpu``): the same code path the GPU run takes, at
tiny sizes, end to end into a Markdown table; a spent budget gives skipped rows, not a crash; and (slow) the
/transform rows through real servers."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import onnxruntime as ort
import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def table_rows(text: str) -> list[list[str]]:
    """The cells of the engine table's rows (the lines between '## Engines' and the next heading)."""
    section = text.split("## Engines", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")][1:]  # less the header
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_cpu_run_measures_every_row(gpu_benchmark, tmp_path):
    out = tmp_path / "gpu.md"
    assert (
        gpu_benchmark.main(
            [
                "--device",
                "cpu",
                "--models",
                "tiny",
                "toyfaces-age",
                "--sizes",
                "32",
                "64",
                "--batches",
                "1",
                "2",
                "--engines",
                "ort-fp32",
                "ort-fp16",
                "trt-fp16",
                "torch-fp32",
                "torch-fp16",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--service",
                "none",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    rows = table_rows(text)
    measured = {(r[0], r[1], r[2], r[3]) for r in rows if r[-1] == "measured"}
    for model, engines in (
        ("tiny", ("ort-fp32", "ort-fp16", "torch-fp32", "torch-fp16")),
        ("toyfaces-age", ("ort-fp32", "ort-fp16")),
    ):  # the shipped graph runs at any size
        for engine in engines:
            for size in ("32", "64"):
                for batch in ("1", "2"):
                    assert (model, engine, size, batch) in measured, (model, engine, size, batch)
    for r in rows:
        if r[-1] == "measured":
            assert float(r[4]) > 0 and float(r[7]) > 0  # on device and with copies, ms per batch
            assert r[9] == "reference" if r[1].endswith("fp32") else float(r[9]) > 30  # PSNR fp16 vs fp32
    skipped = {(r[0], r[1]): r[-1] for r in rows if r[-1].startswith("skipped")}
    assert skipped[("tiny", "trt-fp16")] == "skipped: TensorRT runs on the GPU only"
    assert "no PyTorch checkpoint" in skipped[("toyfaces-age", "torch-fp32")]
    assert "GPU: none" in text and "not measured (`--device cpu`)" in text


def test_spent_budget_skips_rows(gpu_benchmark, tmp_path):
    out = tmp_path / "gpu.md"
    assert (
        gpu_benchmark.main(
            [
                "--device",
                "cpu",
                "--models",
                "tiny",
                "--sizes",
                "32",
                "--batches",
                "1",
                "--engines",
                "ort-fp32",
                "torch-fp16",
                "--service",
                "toyfaces-age",
                "--budget-s",
                "0",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    rows = table_rows(text)
    assert {(r[0], r[1]) for r in rows} == {("tiny", "ort-fp32"), ("tiny", "torch-fp16")}
    assert all(r[-1] == "skipped: the 0 s budget was spent" for r in rows)
    service = [
        line for line in text.split("## /transform", 1)[1].splitlines() if line.startswith("| toyfaces-age")
    ]
    assert len(service) == 1 and service[0].rstrip(" |").endswith("skipped: the 0 s budget was spent")


def test_budget_spent_mid_run_skips_each_row(gpu_benchmark, tmp_path):
    """A model already prepared when the budget runs out: every size x batch row is listed as skipped."""
    args = argparse.Namespace(device="cpu", sizes=[32, 64], batches=[1, 2], repeats=2, warmup=1, budget_s=5.0)
    model = gpu_benchmark.prepare("tiny", tmp_path, REPO / "model_zoo")
    rows = gpu_benchmark.measure_engine("ort-fp32", model, args, deadline=0.0, cache=tmp_path, refs={})
    assert [(r.size, r.batch, r.status, r.note) for r in rows] == [
        ((s, s), b, "skipped", "the 5 s budget was spent") for s in (32, 64) for b in (1, 2)
    ]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="onnxruntime has CUDA here"
)
def test_cuda_rows_without_onnxruntime_gpu_say_why(gpu_benchmark, tmp_path):
    """The likely case on a GPU machine whose onnxruntime is the CPU package: the ONNX Runtime rows and the
    service are skipped, naming the build, not attempted."""
    model = gpu_benchmark.Model("m", tmp_path / "a.onnx", tmp_path / "b.onnx", stride=8, dynamic=True)
    assert "has no CUDA provider: install onnxruntime-gpu" in gpu_benchmark.engine_available(
        "ort-fp16", model, "cuda"
    )
    assert "has no TensorRT provider" in gpu_benchmark.engine_available("trt-fp16", model, "cuda")
    args = argparse.Namespace(device="cuda", budget_s=420.0)
    row = gpu_benchmark.measure_service(
        "toyfaces-age", args, REPO / "model_zoo", tmp_path, deadline=float("inf")
    )
    assert row.status == "skipped" and "has no CUDA provider" in row.note


@pytest.mark.slow
def test_cpu_service_rows(gpu_benchmark, tmp_path):
    """/transform through a real `distill serve` on the shipped entry and on an untrained one made with its fp16
    variant (PRESET@SIZE), each beside the served engine's bare latency (two servers and an export: ~15 s)."""
    out = tmp_path / "gpu.md"
    assert (
        gpu_benchmark.main(
            [
                "--device",
                "cpu",
                "--models",
                "tiny",
                "--sizes",
                "32",
                "--batches",
                "1",
                "--engines",
                "ort-fp32",
                "--repeats",
                "2",
                "--warmup",
                "1",
                "--service",
                "toyfaces-age",
                "tiny@32",
                "--requests",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    section = out.read_text().split("## /transform", 1)[1]
    rows = {
        r[0]: r
        for r in (
            [c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| target")
        )
    }
    assert set(rows) == {"toyfaces-age", "tiny@32"}
    for target, size in (("toyfaces-age", "128"), ("tiny@32", "32")):
        r = rows[target]
        assert r[-1] == "measured", r
        assert r[1] == size and r[2].startswith(("onnxruntime/cpu/", "openvino/cpu/"))
        assert all(float(v) > 0 for v in (r[3], r[5], r[6]))  # /transform, HTTP floor, bare engine p50
