"""The student's ONNX graph: its source (a run or a generator checkpoint), the export, and the parity check against PyTorch."""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.atomic import atomic_write_bytes
from core.errors import DistillError
from core.runfiles import CHECKPOINT, RUN_JSON
from core.versions import versions as core_versions
from engines.ort import cpu_session
from networks.pix2pixhd.conditional import edit_count, is_conditional
from training.variants import (
    run_session,
)

OPSET = 17
PARITY_TOL = 1e-3
ONNX_SIZE_LIMIT = 2_000_000_000  # protobuf's 2 GiB ceiling on a single .onnx file, with margin
PREVIEW_ROWS = 4


@dataclass
class StudentSource:
    """What `distill export` starts from: the generator, where it came from, and the run's records."""

    generator: nn.Module
    checkpoint: Path
    run_dir: Path | None = None
    run_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stride(self) -> int:
        return int(self.generator.config.stride)


def load_source(path: str | os.PathLike) -> StudentSource:
    """A training run folder (``RUN/checkpoints/latest.pt`` + ``RUN/run.json``) or a generator checkpoint file."""
    from networks.pix2pixhd import load_generator

    path = Path(path)
    if path.is_dir():
        ckpt = path / CHECKPOINT
        if not ckpt.is_file():
            raise DistillError(
                f"{path}: not a training run (no checkpoints/latest.pt); train one with `distill train DATASET --out {path}` "
                "or pass a generator checkpoint file (e.g. latest_net_G.pth)"
            )
        meta: dict[str, Any] = {}
        run_json = path / RUN_JSON
        if run_json.is_file():
            try:
                meta = json.loads(run_json.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DistillError(
                    f"{run_json}: not valid JSON ({e}); restore it or export {ckpt} directly"
                ) from e
        return StudentSource(load_generator(ckpt), ckpt, path, meta)
    if not path.exists():
        raise DistillError(f"{path}: no such run folder or checkpoint file")
    return StudentSource(load_generator(path), path)


def export_onnx(
    model: nn.Module, path: str | os.PathLike, example_size: tuple[int, int], opset: int = OPSET
) -> Path:
    """Trace ``model`` (eval, CPU, float32) to ONNX at ``path`` with dynamic batch/height/width; atomic write."""
    model = model.eval().float().cpu()
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if n_bytes > ONNX_SIZE_LIMIT:
        raise DistillError(
            f"the generator has {n_bytes / 1e9:.2f} GB of weights, over ONNX's 2 GB single-file limit; "
            "export a smaller configuration (e.g. netG local with --ngf 32, as NVIDIA's 1024p recipe)"
        )
    example = torch.zeros(1, 3, *example_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    inputs, names, dynamic = (example,), ["input"], {"input": axes, "output": axes}
    if is_conditional(model):  # the strength-conditioned student: a second input, strength [N] (or [N, K])
        k = edit_count(model)
        inputs, names, dynamic = (
            (example, torch.ones(1) if k == 1 else torch.ones(1, k)),
            ["input", "strength"],
            {**dynamic, "strength": {0: "batch"}},
        )
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs,
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=["output"],
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    return atomic_write_bytes(path, buf.getvalue())


def parity_sizes(native: tuple[int, int], stride: int) -> list[tuple[int, int]]:
    """The native size and a small non-square size (both multiples of ``stride``) for the parity check."""
    h = stride * max(2, -(-64 // stride))
    other = (h, h + 2 * stride)
    return [tuple(native), other] if tuple(native) != other else [tuple(native), (h + stride, h)]


def check_parity(
    model: nn.Module,
    onnx_path: str | os.PathLike,
    sizes: list[tuple[int, int]],
    *,
    batch: int = 2,
    seed: int = 20240917,
    tol: float = PARITY_TOL,
    strength_range: tuple[float, float] = (-1.0, 1.0),
    edit_ranges: list[tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Max |ONNX Runtime - PyTorch| on random [batch,3,H,W] inputs at each size (a conditional model with random
    strengths in ``strength_range``, or for K edits a vector [batch, K] drawn in ``edit_ranges``); DistillError
    above ``tol``. A conditional model must also give back the input exactly at strength 0 (every edit 0)."""
    session = cpu_session(onnx_path)
    gen = torch.Generator().manual_seed(seed)
    conditional = is_conditional(model)
    ranges = edit_ranges if edit_ranges is not None else [strength_range]
    low, high = torch.tensor([r[0] for r in ranges]), torch.tensor([r[1] for r in ranges])
    k = edit_count(model)
    if conditional and len(ranges) != k:
        raise DistillError(
            f"check_parity: the model takes {k} edit strengths but {len(ranges)} ranges were given"
        )
    per_size = {}
    with torch.no_grad():
        for h, w in sizes:
            x = torch.rand(batch, 3, h, w, generator=gen) * 2 - 1
            s = low + torch.rand(batch, len(ranges), generator=gen) * (high - low)
            s = s.reshape(-1) if k == 1 else s
            ref = (model(x, s) if conditional else model(x)).numpy()
            out = run_session(session, x.numpy(), batch=batch, strengths=s.numpy() if conditional else None)
            assert out.shape == ref.shape, (out.shape, ref.shape)
            per_size[f"{h}x{w}"] = float(np.abs(out - ref).max())
        if conditional:
            zero = run_session(session, x.numpy(), batch=batch, strengths=np.zeros((batch, k), np.float32))
            zero_diff = float(np.abs(zero - x.numpy()).max())
    worst = max(per_size.values())
    if not worst <= tol:
        raise DistillError(
            f"{onnx_path}: ONNX Runtime differs from PyTorch by {worst:.3g} (> {tol:g}) at {per_size}; "
            "the export is broken for this network (please report it with the checkpoint's config)"
        )
    record = {
        "parity_max_abs_diff": worst,
        "parity_per_size": per_size,
        "parity_batch": batch,
        "parity_seed": seed,
        "parity_tolerance": tol,
        "parity_provider": "CPUExecutionProvider",
    }
    if conditional:
        if zero_diff != 0.0:
            raise DistillError(
                f"{onnx_path}: strength 0 changes the input by up to {zero_diff:.3g} (it must give it back exactly); "
                "the export is broken for this network"
            )
        record["parity_zero_strength_max_abs_diff"] = zero_diff
    return record


def versions() -> dict[str, str]:
    """Library versions the export ran with (recorded in the manifest)."""
    return core_versions("torch", "onnx", "onnxruntime", "onnxconverter_common", "numpy")
