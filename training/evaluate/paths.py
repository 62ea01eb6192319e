"""`distill evaluate`'s three paths: the teacher's edit, the student's ONNX variants and the legacy
projection, run on the same seeds."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from core.atomic import atomic_write_json
from editing.directions import apply_direction
from editing.images import from_uint8, load_image, save_image, to_uint8
from engines.base import EngineSpec
from engines.ort import OrtEngine
from model_zoo.registry import ModelEntry
from training.directions import file_sha256, z_from_seeds
from training.evaluate.inputs import WARMUP_RUNS, EditSpec

# ----------------------------------------------------------------------------------------------
# The three paths.


class Student:
    """One ONNX variant of the student in ONNX Runtime on the CPU: the service's engine (engines.ort.OrtEngine)."""

    def __init__(self, variant: str, path: Path, threads: int) -> None:
        self.variant = variant
        self.path = path
        self.engine = OrtEngine(
            EngineSpec("onnxruntime", "cpu", variant, variant), path, intra_op_threads=threads
        )
        self.seconds: list[float] = []

    def __call__(self, image: np.ndarray, strength: float | None = None) -> np.ndarray:
        """uint8 [H,W,3] -> uint8 [H,W,3] (a strength-conditioned student at ``strength``, default 1.0: the
        edit's own alpha)."""
        s = None if strength is None else np.asarray([strength], np.float32)
        y = self.engine.run(from_uint8(image).numpy(), s)
        return to_uint8(torch.from_numpy(np.asarray(y)))[0]

    def timed_run(self, x: np.ndarray) -> None:
        """One timed batch-1 run of a prepared float32 input; the time goes to ``seconds``."""
        t0 = time.perf_counter()
        self.engine.run(x)
        self.seconds.append(time.perf_counter() - t0)


def time_students(students: list[Student], images: list[np.ndarray]) -> None:
    """Per-image latency of every variant on the same inputs, side by side: after ``WARMUP_RUNS`` untimed
    runs each, every image goes through every variant in turn (the order rotating per image), so slow
    spells of a shared machine hit all variants alike. Timed apart from the teacher's torch work."""
    inputs = [from_uint8(im).numpy() for im in images]
    for s in students:
        for _ in range(WARMUP_RUNS):
            s.engine.run(inputs[0])
    for i, x in enumerate(tqdm(inputs, desc="student latency", unit="img")):
        for k in range(len(students)):
            students[(i + k) % len(students)].timed_run(x)


def engine_latency(
    entry: ModelEntry, variants: list[str], images: list[np.ndarray], threads: int
) -> list[dict[str, Any]]:
    """Median batch-1 latency of each evaluated variant in each engine this machine has (ONNX Runtime, OpenVINO
    f32/bf16/int8), with its PSNR against ONNX Runtime fp32 on up to 4 of the timing inputs (engines/)."""
    from engines.measure import engine_table

    x = np.concatenate([from_uint8(im).numpy() for im in images[:4]]).astype(np.float32)
    return engine_table(
        {v: entry.variant_path(v) for v in variants},
        entry.input_size,
        x,
        repeats=max(3, min(len(images), 20)),
        threads=threads,
        variants={v: entry.variants[v] for v in variants},
    )


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H,W,3] to (H, W) with PIL bicubic (the service's resize); unchanged when already that size."""
    if image.shape[:2] == tuple(size):
        return image
    return np.array(Image.fromarray(image).resize((size[1], size[0]), Image.BICUBIC))


@torch.no_grad()
def teacher_pairs(
    G: torch.nn.Module, direction: torch.Tensor, spec: EditSpec, seeds: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 originals and edits [N,R,R,3] for ``seeds``, exactly as `distill pairs` renders them."""
    z = z_from_seeds(seeds, G.z_dim).to(G.w_avg.device)
    ws = G.mapping(z, truncation_psi=spec.truncation)
    ws_edit = apply_direction(ws, direction, spec.alpha, spec.layers, spec.normalize)
    images = to_uint8(G.synthesis(torch.cat([ws, ws_edit]), noise_mode="const"))
    return images[: len(seeds)], images[len(seeds) :]


def legacy_key(spec: EditSpec, steps: int, vgg16: str | None, device: torch.device) -> str:
    """Identifies the legacy settings, so cached projections are reused only for the same edit, steps and device."""
    parts = [
        file_sha256(spec.teacher),
        file_sha256(spec.direction),
        spec.alpha,
        spec.layers,
        spec.normalize,
        spec.truncation,
        steps,
        file_sha256(vgg16) if vgg16 else None,
        "projector-seed-0",
        device.type,
    ]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def seed_name(seed: int) -> str:
    """A teacher seed's name in the legacy cache: 8 digits, e.g. ``01000000``."""
    return f"{seed:08d}"


def legacy_outputs(
    G: torch.nn.Module,
    direction: torch.Tensor,
    spec: EditSpec,
    names: list[str],
    originals: list[np.ndarray],
    steps: int,
    vgg16: str | None,
    cache: Path,
) -> tuple[list[np.ndarray], list[float], int]:
    """Project, edit and synthesize each original (cached in ``cache`` as NAME.png and NAME.json, one name per
    original: ``seed_name(seed)`` for a teacher seed); (outputs, seconds each, how many came from ``cache``)."""
    from editing.projector import legacy_edit, w_stats

    device = G.w_avg.device
    key = legacy_key(spec, steps, vgg16, device)
    cache.mkdir(parents=True, exist_ok=True)
    outputs, seconds, reused = [], [], 0
    warm = False
    bar = tqdm(list(zip(names, originals, strict=True)), desc=f"legacy ({steps} steps)", unit="img")
    for name, original in bar:
        image_path, record_path = cache / f"{name}.png", cache / f"{name}.json"
        if record_path.is_file() and image_path.is_file():
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if record.get("key") == key:
                outputs.append(np.array(load_image(image_path)))
                seconds.append(float(record["seconds"]))
                reused += 1
                continue
        if not warm:  # as the service does before it turns ready: W statistics, lazy imports, first steps
            w_stats(G)
            legacy_edit(
                G,
                from_uint8(original),
                direction,
                spec.alpha,
                spec.layers,
                steps=2,
                normalize=spec.normalize,
                vgg16_path=vgg16,
                seed=0,
            )
            warm = True
        t0 = time.perf_counter()
        edited = legacy_edit(
            G,
            from_uint8(original),
            direction,
            spec.alpha,
            spec.layers,
            steps=steps,
            normalize=spec.normalize,
            vgg16_path=vgg16,
            seed=0,
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        out = to_uint8(edited)[0]
        save_image(image_path, out)
        atomic_write_json(record_path, {"input": name, "seconds": elapsed, "steps": steps, "key": key})
        outputs.append(out)
        seconds.append(elapsed)
        bar.set_postfix(s_per_img=f"{elapsed:.1f}")
    return outputs, seconds, reused
