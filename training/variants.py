"""Reduced-precision variants of an exported student, each gated on its measured error against fp32.

- ``fp16``: every weight and activation in float16 for ONNX Runtime's CUDA provider (T4 tensor cores),
  with float32 inputs and outputs kept so callers do not change
  (``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``).
- ``int8``: static QDQ quantization for the CPU provider: per-channel int8 weights, uint8 activations
  calibrated (min/max) on training inputs. Only Conv is quantized: ONNX Runtime has no int8
  ConvTranspose kernel on CPU, InstanceNorm/Tanh stay in float32 between the quantized convs, and the
  first and last Conv (image in, image out) stay in float32 (see :func:`fp32_convs`).

A strength-conditioned student has a second input, ``strength`` [N] ([N, K] for K edits): its variants are
calibrated and measured with strengths spread over the trained range (``strengths`` arguments, a vector per
image for K edits, drawn as the pairs'; a missing one is strength 1.0, each edit's own alpha).

A variant is kept only when the PSNR of its outputs against the fp32 model's outputs, on held-out
inputs, is at least the bound (35 dB by default); otherwise :class:`VariantRefused` carries the figure.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from core.atomic import atomic_write_bytes
from core.errors import DistillError
from engines.cpu import cpu_model as cpu_description  # "measured on" records: one CPU description for all
from engines.ort import cpu_session
from engines.select import MIN_PSNR_DB, psnr_db_per_image
from model_zoo.schema import STRENGTH_INPUT

VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
VARIANT_PROVIDERS = {
    "fp32": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "fp16": ["CUDAExecutionProvider"],
    "int8": ["CPUExecutionProvider"],
}


class VariantRefused(DistillError):
    """A variant's outputs are too far from fp32 (PSNR below the bound); ``psnr_db`` holds the measured figure."""

    def __init__(self, variant: str, psnr_db: float, bound_db: float, n_images: int):
        self.variant, self.psnr_db, self.bound_db, self.n_images = variant, psnr_db, bound_db, n_images
        super().__init__(
            f"{variant} variant refused: PSNR against fp32 is {psnr_db:.2f} dB on {n_images} held-out inputs, "
            f"below the {bound_db:g} dB bound; ship fp32 only, or calibrate on more/other training inputs "
            f"(--calibration, --num-calibration)"
        )


def has_strength(session: ort.InferenceSession) -> bool:
    """Whether the model takes a ``strength`` input beside the image (a conditional student)."""
    return any(i.name == STRENGTH_INPUT for i in session.get_inputs())


def strength_width(session: ort.InferenceSession) -> int:
    """K, the edits of a conditional model's ``strength`` input: 1 for [N], K for [N, K]."""
    shape = next(i.shape for i in session.get_inputs() if i.name == STRENGTH_INPUT)
    return int(shape[1]) if len(shape) == 2 else 1


def feeds(
    session: ort.InferenceSession, images: np.ndarray, strengths: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The session's inputs for ``images`` (and, for a conditional model, ``strengths`` [N] or [N, K],
    default 1.0)."""
    feed = {session.get_inputs()[0].name: images}
    if has_strength(session):
        k = strength_width(session)
        s = np.ones((len(images), k), np.float32) if strengths is None else np.asarray(strengths, np.float32)
        feed[STRENGTH_INPUT] = s.reshape(-1) if k == 1 else s.reshape(-1, k)
    return feed


def run_session(
    session: ort.InferenceSession, images: np.ndarray, batch: int = 1, strengths: np.ndarray | None = None
) -> np.ndarray:
    """Run ``images`` [N,3,H,W] float32 (with ``strengths`` [N] or [N, K] for a conditional model) through a
    session, ``batch`` at a time."""
    s = None if strengths is None else np.asarray(strengths, np.float32).reshape(len(images), -1)
    outs = [
        session.run(None, feeds(session, images[i : i + batch], None if s is None else s[i : i + batch]))[0]
        for i in range(0, len(images), batch)
    ]
    return np.concatenate(outs).astype(np.float32)


def median_ms(
    session: ort.InferenceSession, size: tuple[int, int], repeats: int = 5, warmup: int = 2, seed: int = 0
) -> float:
    """Median wall time in ms of one batch-1 run at ``size`` (H, W), after ``warmup`` runs."""
    x = np.random.default_rng(seed).uniform(-1, 1, (1, 3, *size)).astype(np.float32)
    feed = feeds(session, x)
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write the float16 variant of ``src`` to ``dst`` (float32 graph inputs and outputs kept)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    truncated = [w for w in caught if "will be truncated" in str(w.message)]
    for w in caught:
        if w not in truncated:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if truncated:
        # one line for what onnxconverter_common says once per tensor: the PSNR measured next is the verdict
        print(
            f"fp16: {len(truncated)} clampings of float32 weights outside float16's range (magnitudes below 6e-8 "
            "or above 65504; onnxconverter_common's warnings, summarised); the PSNR against fp32 measures the effect",
            file=sys.stderr,
        )
    return atomic_write_bytes(dst, model.SerializeToString())


class ImageCalibrationReader(CalibrationDataReader):
    """Feeds calibration images ([3,H,W] float32 in [-1,1]) one at a time to ONNX Runtime's calibrator, with
    each one's strength (a float, or a list of K for K edits) for a conditional model."""

    def __init__(
        self,
        input_name: str,
        images: Sequence[np.ndarray],
        progress: bool = True,
        strengths: Sequence[float | list[float]] | None = None,
    ):
        self.input_name = input_name
        self.images = iter(images)
        self.strengths = None if strengths is None else iter(strengths)
        self.bar = tqdm(
            total=len(images), desc="int8 calibration", unit="img", leave=False, disable=not progress
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.images, None)
        if image is None:
            self.bar.close()
            return None
        self.bar.update(1)
        assert image.ndim == 3 and image.shape[0] == 3, image.shape
        feed = {self.input_name: image[None].astype(np.float32)}
        if self.strengths is not None:
            feed[STRENGTH_INPUT] = np.asarray([next(self.strengths)], np.float32)
        return feed


def fp32_convs(path: str | os.PathLike) -> list[str]:
    """The first and last Conv of the graph, kept in float32 by :func:`quantize_int8`.

    They see the 3-channel image and produce it: a few percent of the FLOPs but most of the int8 error
    (measured on the slim preset, random weights, 64 px: 26.0 dB PSNR against fp32 with every Conv
    quantized, 33.6 dB with these two in float32).
    """
    convs = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node if n.op_type == "Conv"]
    return [convs[0], convs[-1]] if len(convs) > 2 else []


def quantize_int8(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: Sequence[np.ndarray],
    strengths: Sequence[float | list[float]] | None = None,
) -> Path:
    """Write the static QDQ int8 variant of ``src`` to ``dst``, calibrated on ``calibration`` ([3,H,W] in [-1,1])
    with ``strengths`` (one per image, over the trained range) for a conditional model."""
    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(out),
            ImageCalibrationReader("input", calibration, strengths=strengths),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=fp32_convs(pre),
        )
        os.replace(out, dst)
    return dst


def measure_error(
    fp32_path: str | os.PathLike,
    variant_path: str | os.PathLike,
    images: np.ndarray,
    strengths: np.ndarray | None = None,
) -> dict[str, Any]:
    """PSNR (mean and worst image) and max |diff| of a variant's outputs against fp32's, on ONNX Runtime CPU."""
    ref = run_session(cpu_session(fp32_path), images, strengths=strengths)
    out = run_session(cpu_session(variant_path), images, strengths=strengths)
    p = psnr_db_per_image(out, ref)
    return {
        "psnr_vs_fp32_db": round(float(p.mean()), 3),
        "psnr_vs_fp32_min_db": round(float(p.min()), 3),
        "max_abs_diff_vs_fp32": float(np.abs(out - ref).max()),
        "error_images": len(images),
        "error_measured_with": "CPUExecutionProvider",
    }


def build_variant(
    variant: str,
    fp32_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    eval_images: np.ndarray,
    calibration: Sequence[np.ndarray] | None = None,
    native_size: tuple[int, int],
    min_psnr_db: float = MIN_PSNR_DB,
    timing_repeats: int = 5,
    eval_strengths: np.ndarray | None = None,
    calibration_strengths: Sequence[float | list[float]] | None = None,
) -> dict[str, Any]:
    """Write ``variant`` next to ``fp32_path`` if it passes the PSNR gate; return its manifest record.

    ``eval_images`` are held-out inputs [N,3,H,W]; ``calibration`` (int8 only) are training inputs; for a
    conditional model ``eval_strengths`` and ``calibration_strengths`` give each image's strength.
    Raises :class:`VariantRefused` (the file is removed) when the PSNR against fp32 is below ``min_psnr_db``.
    """
    if variant not in ("fp16", "int8"):
        raise DistillError(f"--variants: unknown variant {variant!r}; choose from fp16, int8")
    dst = Path(out_dir) / VARIANT_FILES[variant]
    if variant == "fp16":
        convert_fp16(fp32_path, dst)
    else:
        if not calibration:
            raise DistillError(
                "--variants int8 needs calibration images: pass --calibration DATASET (its train_A/)"
            )
        quantize_int8(fp32_path, dst, calibration, calibration_strengths)
    record: dict[str, Any] = {"file": dst.name, "providers": VARIANT_PROVIDERS[variant]}
    record.update(measure_error(fp32_path, dst, eval_images, eval_strengths))
    record["min_psnr_db"] = min_psnr_db
    if record["psnr_vs_fp32_db"] < min_psnr_db:
        dst.unlink()
        raise VariantRefused(variant, record["psnr_vs_fp32_db"], min_psnr_db, len(eval_images))
    if variant == "int8":
        record["calibration_images"] = len(calibration)
        record["calibration_method"] = (
            "MinMax, per-channel int8 weights, uint8 activations, QDQ on Conv "
            "except the first and last (float32)"
        )
        if calibration_strengths is not None:
            s = np.asarray(calibration_strengths, np.float32).reshape(len(calibration_strengths), -1)
            record["calibration_method"] += (
                f"; strengths {s.min():g} to {s.max():g} (the pairs' own)"
                if s.shape[1] == 1
                else f"; strength vectors of {s.shape[1]} edits, {s.min():g} to {s.max():g} (the pairs' own)"
            )
    record.update(timing_record(dst, native_size, timing_repeats))
    if variant == "fp16":
        record["note"] = (
            "built for the CUDA provider; error and speed measured here on the CPU provider, which runs "
            "float16 nodes without a CPU kernel through inserted casts to float32"
        )
    return record


def timing_record(path: str | os.PathLike, size: tuple[int, int], repeats: int = 5) -> dict[str, Any]:
    """The manifest's speed fields: median ms of a batch-1 run at ``size`` on the CPU provider, and where."""
    return {
        "median_ms": round(median_ms(cpu_session(path), size, repeats=repeats), 2),
        "timed_size": list(size),
        "measured_on": f"CPUExecutionProvider, {cpu_description()}",
    }
