"""Export of the strength-conditioned student: two ONNX inputs, parity with torch, the manifest's range."""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from engines.ort import cpu_session
from model_zoo.registry import get_entry
from networks.pix2pixhd import build_generator, get_preset, load_generator
from training.export import check_parity, export_onnx
from training.variants import run_session


def conditional_generator(condition: str) -> torch.nn.Module:
    """A tiny residual generator with ``condition``, its weights nudged off their init (seed 0) so the
    strength changes the output."""
    torch.manual_seed(0)
    G = build_generator(get_preset("tiny", residual=True, condition=condition)).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return G


def test_two_inputs_and_parity_with_torch(tmp_path):
    G = conditional_generator("modulation")
    path = export_onnx(G, tmp_path / "m.onnx", (32, 32))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input", "strength"]
    assert [d.dim_param for d in graph.input[1].type.tensor_type.shape.dim] == ["batch"]
    parity = check_parity(G, path, [(32, 32), (32, 48)], batch=3, strength_range=(-1.5, 1.5))
    assert parity["parity_max_abs_diff"] < 1e-4
    # a batch of mixed strengths answers each image at its own strength, 0 = the input
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (3, 3, 32, 32)).astype(np.float32)
    s = np.array([0.0, 1.0, -1.0], np.float32)
    y = run_session(cpu_session(path), x, batch=3, strengths=s)
    assert np.abs(y[0] - x[0]).max() < 1e-6
    with torch.no_grad():
        ref = G(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    assert np.abs(y - ref).max() < 1e-4


def test_entry_records_the_trained_range(conditional_entry):
    entry = get_entry(conditional_entry.name, conditional_entry.parent)
    spec = entry.spec
    assert spec.strength is not None and spec.strength.range == (-1.5, 1.5) and spec.strength.default == 1.0
    assert spec.strength.units == "relative" and spec.edit.alpha == 1.0
    assert [(e.range, e.default) for e in spec.edits] == [
        ((-1.5, 1.5), 1.0)
    ]  # derived: said once, in strength
    assert "edits" not in json.loads((conditional_entry / "manifest.json").read_text())
    assert "strengths" in spec.variants["int8"].calibration_method  # calibrated over the pairs' own strengths
    G = load_generator(conditional_entry.parent.parent / "run" / "checkpoints" / "latest.pt")
    for variant in ("fp32", "int8"):
        session = cpu_session(entry.variant_path(variant))
        assert [i.name for i in session.get_inputs()] == ["input", "strength"]
    x = np.random.default_rng(1).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    s = np.array([-1.5, 0.75], np.float32)
    with torch.no_grad():
        ref = G(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    assert np.abs(run_session(cpu_session(entry.variant_path("fp32")), x, 2, s) - ref).max() < 1e-4


def test_fp16_and_int8_variants_take_the_strength(tmp_path):
    from training.variants import build_variant

    G = conditional_generator("plane")
    path = export_onnx(G, tmp_path / "model.onnx", (32, 32))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, 32, 32)).astype(np.float32)
    s = np.array([-1.5, -0.5, 0.5, 1.5], np.float32)
    fp16 = build_variant(
        "fp16", path, tmp_path, eval_images=x, native_size=(32, 32), eval_strengths=s, timing_repeats=1
    )
    int8 = build_variant(
        "int8",
        path,
        tmp_path,
        eval_images=x,
        calibration=list(x),
        calibration_strengths=s.tolist(),
        native_size=(32, 32),
        eval_strengths=s,
        min_psnr_db=30,
        timing_repeats=1,
    )
    assert fp16["psnr_vs_fp32_db"] > 35 and int8["psnr_vs_fp32_db"] > 30
    for name in (fp16["file"], int8["file"]):
        assert [i.name for i in cpu_session(tmp_path / name).get_inputs()] == ["input", "strength"]
