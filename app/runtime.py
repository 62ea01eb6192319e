"""The engine serving each model-zoo entry: chosen by measurement at warm-up, checked against the manifest.

:func:`load_runtime` lists the candidates (:mod:`engines.select`: ONNX Runtime on CPU, CUDA and
TensorRT where the build has them, OpenVINO on the CPU in fp32, bf16 where the CPU computes it natively,
and on the INT8 file), narrowed by ``DISTILL_ENGINE``, ``DISTILL_PROVIDER``, ``DISTILL_VARIANT_CPU``/
``_CUDA`` and ``DISTILL_OPENVINO_PRECISION``. One candidate is loaded as configured; several are gated
(PSNR against ONNX Runtime fp32 on the CPU, on the entry's sample images, >= 35 dB) and timed at the
native size, and the fastest is served. On CUDA the inputs and outputs go through I/O binding and
warm-up runs every batch size the micro-batcher can form (cuDNN's algorithm search is per shape).

Before the choice, :meth:`ModelRuntime.check_contract` holds the ONNX model to its manifest (one float
input and output, [N, 3, H, W] at the manifest's size, the output the input's shape; a strength-conditioned
student's ``strength`` [N], or [N, K] for a student of the manifest's K ``edits``): a model that
loads but does not fit (another model copied into the entry) is refused at start with the reason,
instead of answering every request with a 500.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app import imaging
from app.config import Settings
from core.errors import DistillError
from editing.pixels import to_input
from engines.base import CandidateResult, Engine, EngineSpec
from engines.cpu import native_bf16
from engines.ort import CPU_EP, CUDA_EP, OrtEngine, available_devices
from engines.ov import OpenVinoEngine, openvino_version
from engines.select import REFERENCE, plan_candidates, select_engine
from model_zoo.registry import ModelEntry

log = logging.getLogger("app.runtime")

_NP_TYPES = ("tensor(float)", "tensor(float16)")
SAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
GATE_IMAGES = 4


@dataclass(frozen=True)
class ProviderChoice:
    """The execution provider asked for (``cuda``/``cpu``) and why it was chosen."""

    name: str
    reason: str


def choose_provider(requested: str) -> ProviderChoice:
    """Resolve ``auto``/``cuda``/``cpu`` against this onnxruntime build; ``cuda`` without CUDA is a DistillError."""
    available = ort.get_available_providers()
    if requested == "cpu":
        return ProviderChoice("cpu", "requested")
    if CUDA_EP in available:
        return ProviderChoice("cuda", "requested" if requested == "cuda" else "auto: onnxruntime has CUDA")
    if requested == "cuda":
        raise DistillError(
            f"provider cuda: this onnxruntime build has no CUDA execution provider (available: "
            f"{', '.join(available)}); install onnxruntime-gpu or use --provider cpu/auto"
        )
    return ProviderChoice(
        "cpu", f"auto: onnxruntime {ort.__version__} has no CUDA provider ({', '.join(available)})"
    )


def choose_variant(entry: ModelEntry, provider: str, wanted: str) -> tuple[str, str]:
    """The variant to load on ``provider``: ``wanted`` when the entry has it (and allows the provider), else fp32."""
    variants = entry.variants
    record = variants.get(wanted)
    if record is None:
        return "fp32", f"{wanted} not in the entry (has {', '.join(sorted(variants))})"
    allowed = record.get("providers") or []
    full = {"cuda": CUDA_EP, "cpu": CPU_EP}[provider]
    if allowed and provider not in allowed and full not in allowed:
        return "fp32", f"{wanted} is marked for {', '.join(allowed)}, not {provider}"
    return wanted, "configured"


def ort_devices(choice: ProviderChoice, requested: str) -> list[str]:
    """Where ONNX Runtime may run: the CPU; CUDA (and TensorRT when the build has it) on a CUDA build,
    the CPU too unless ``cuda`` was requested."""
    if choice.name == "cpu":
        return ["cpu"]
    gpu: list[str] = [d for d in ("tensorrt", "cuda") if d in available_devices()]
    return gpu if requested == "cuda" else gpu + ["cpu"]


def engine_cache_dir(configured: Path | None) -> Path | None:
    """A writable folder for compiled models: DISTILL_ENGINE_CACHE, else ``$XDG_CACHE_HOME/distill`` (or
    ``~/.cache/distill``), else one in the temp folder; None (no cache, a warning) when none is writable."""
    if configured is not None:
        candidates = [configured]
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        candidates = [base / "distill", Path(tempfile.gettempdir()) / f"distill-cache-{os.getuid()}"]
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    log.warning(
        "no writable engine cache (%s): compiled models are not kept across restarts",
        ", ".join(map(str, candidates)),
    )
    return None


@dataclass
class ModelRuntime:
    """The engine serving one model-zoo entry, and how it was chosen."""

    entry: ModelEntry
    engine: Engine
    provider_reason: str = "requested"
    engine_reason: str = "configured"
    candidates: list[CandidateResult] = field(default_factory=list)
    batch_warning: str | None = None  # why the model is served at batch 1 (it failed the batch check)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def provider(self) -> str:
        """Where the engine runs: ``cpu``, ``cuda`` or ``tensorrt``."""
        return self.engine.device

    @property
    def engine_name(self) -> str:
        return self.engine.spec.engine

    @property
    def variant(self) -> str:
        return self.engine.spec.variant

    @property
    def precision(self) -> str:
        return self.engine.spec.precision

    @property
    def io_binding(self) -> bool:
        """On CUDA: inputs and outputs bound to device memory explicitly (ONNX Runtime engines only)."""
        return bool(getattr(self.engine, "io_binding", False))

    @io_binding.setter
    def io_binding(self, value: bool) -> None:
        if isinstance(self.engine, OrtEngine):
            self.engine.io_binding = value

    @property
    def batch_limit(self) -> int | None:
        """The model's fixed batch size when its input has one (then no micro-batching), else None."""
        dim = self.engine.signature()[0][0].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def native_hw(self) -> tuple[int, int]:
        return self.entry.input_size

    @property
    def conditional(self) -> bool:
        """Whether the model takes per-image edit strengths: its manifest has ``strength`` (one edit, [N]) or
        lists several ``edits`` ([N, K])."""
        return self.entry.spec.strength is not None or self.edit_count > 1

    @property
    def edit_count(self) -> int:
        """K, the edits the manifest lists (0 for an entry that says nothing of its edit)."""
        return len(self.entry.spec.edits)

    def default_strengths(self) -> np.ndarray:
        """float32 [K]: each edit's manifest default, what a request that sets none gets."""
        return np.array([e.default for e in self.entry.spec.edits], np.float32)

    def run(self, batch: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
        """float32 [N,3,H,W] in [-1,1] (and, for a conditional model, float32 strengths [N, K] in the manifest's
        edit order, [N] also taken for one edit; None: the manifest's defaults) -> float32 [N,3,H,W]; blocking
        (call it from a worker thread)."""
        if strength is None and self.conditional:
            strength = np.tile(self.default_strengths(), (len(batch), 1))
        return self.engine.run(batch, strength)

    def check_contract(self) -> None:
        """DistillError naming the file and what differs when the model's input or output is not the manifest's
        [N, 3, H, W] float tensor (with strength [N], or [N, K] for K edits), checked on the declared shapes and
        on one inference at the native size."""
        h, w = self.native_hw
        path = self.engine.path
        fix = f"re-export the entry (`distill export RUN --out {self.entry.path}`) or fix input.size in its manifest"
        inputs, outputs = self.engine.signature()
        # a strength-conditioned student also takes strength [N] or [N, K]
        want = 2 if self.conditional else 1
        if len(inputs) != want or not outputs:
            kind = (
                "a strength-conditioned student has two inputs (input, strength)"
                if self.conditional
                else "a student has one input"
            )
            raise DistillError(
                f"{path}: model {self.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                f"{kind} and one output; {fix}"
            )
        k = self.edit_count
        expected = [k] if k > 1 else []
        if self.conditional and (
            inputs[1].type_name != "tensor(float)"
            or len(inputs[1].shape) != 1 + len(expected)
            or list(inputs[1].shape[1:]) != expected
        ):
            said = f"float32 [N, {k}] (its {k} edits)" if k > 1 else "float32 [N]"
            raise DistillError(
                f"{path}: model {self.name!r} declares its second input {inputs[1].type_name} "
                f"{list(inputs[1].shape)}; the manifest's strength is {said}; {fix}"
            )
        for role, arg in (("input", inputs[0]), ("output", outputs[0])):
            declared = list(arg.shape)
            fixed = [d if isinstance(d, int) else None for d in declared]
            if (
                arg.type_name not in _NP_TYPES
                or len(declared) != 4
                or any(d is not None and d != want for d, want in zip(fixed[1:], (3, h, w), strict=True))
            ):
                shape = ", ".join("?" if d is None else str(d) for d in declared)
                raise DistillError(
                    f"{path}: model {self.name!r} declares {role} {arg.type_name} [{shape}]; the "
                    f"manifest says float [N, 3, {h}, {w}]; {fix}"
                )
        try:
            y = self.run(np.zeros((1, 3, h, w), np.float32))
        except Exception as e:  # the engines' own exception types
            raise DistillError(
                f"{path}: model {self.name!r} fails on a [1, 3, {h}, {w}] input ({e}); {fix}"
            ) from e
        if y.shape != (1, 3, h, w):
            raise DistillError(
                f"{path}: model {self.name!r} answers a [1, 3, {h}, {w}] input with {list(y.shape)}; "
                f"a student returns its input's shape; {fix}"
            )

    def check_batching(self, max_batch: int) -> str | None:
        """Run one batch of 2 and one of ``max_batch`` (random inputs): a model whose graph declares a dynamic
        batch but fails beyond 1 (a reshape to ``[1, 3, H, W]``) would fail every shared micro-batch. The
        reason when a batch fails or answers the wrong shape (the model is then served at batch 1), else None."""
        h, w = self.native_hw
        rng = np.random.default_rng(0)
        for n in sorted({min(2, max_batch), max_batch} - {1}):
            x = rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32)
            strength = np.ones((n, self.edit_count), np.float32) if self.conditional else None
            try:
                y = self.run(x, strength)
            except Exception as e:  # the engines' own exception types
                return f"fails on a batch of {n} ({type(e).__name__}: {str(e)[:200]})"
            if getattr(y, "shape", None) != (n, 3, h, w):
                return f"answers a batch of {n} with {list(getattr(y, 'shape', ()))}"
        return None

    def warm_up(self, runs: int, max_batch: int) -> float:
        """Run ``runs`` times at batch 1 (and, on a GPU, once at every batch size up to ``max_batch``); seconds."""
        h, w = self.native_hw
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        sizes = [1] * runs + (list(range(2, max_batch + 1)) if self.provider != "cpu" and runs else [])
        for n in sizes:
            self.run(rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32))
        return time.perf_counter() - t0


def open_engine(entry: ModelEntry, spec: EngineSpec, settings: Settings, cache_dir: Path | None) -> Engine:
    """Load ``spec``'s engine on ``entry``'s variant file (DistillError naming the file when it cannot)."""
    path = entry.variant_path(spec.variant)
    if spec.engine == "openvino":
        return OpenVinoEngine(  # static shapes for a lone request and a full micro-batch
            spec,
            path,
            entry.input_size,
            threads=settings.intra_op_threads,
            cache_dir=cache_dir,
            static_batches=(1, settings.max_batch),
            streams=settings.inference_streams,
        )
    try:
        return OrtEngine(
            spec,
            path,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            cache_dir=cache_dir,
        )
    except DistillError as e:
        raise DistillError(f"model {entry.name!r}: {e}") from e


def load_runtime(entry: ModelEntry, settings: Settings) -> ModelRuntime:
    """The engine for ``entry``: the configured one, or the fastest candidate within the accuracy gate."""
    choice = choose_provider(settings.provider)
    plan = plan_candidates(
        entry.variants,
        engine=settings.engine,
        ort_devices=ort_devices(choice, settings.provider),
        ort_cpu=settings.variant_cpu,
        ort_cuda=settings.variant_cuda,
        openvino=settings.openvino_precision,
        openvino_available=openvino_version() is not None,
        bf16_native=native_bf16(),
    )
    for note in plan.notes:
        log.info("model %s: %s", entry.name, note)
    cache_dir = engine_cache_dir(settings.engine_cache)

    def opener(spec: EngineSpec) -> Engine:
        return open_engine(entry, spec, settings, cache_dir)

    if len(plan.specs) == 1:
        spec = plan.specs[0]
        return ModelRuntime(
            entry,
            opener(spec),
            choice.reason,
            f"configured: {spec.label} (one candidate)",
            [CandidateResult.of(spec, "configured")],
        )
    reference = ModelRuntime(entry, opener(REFERENCE), choice.reason)
    reference.check_contract()  # a model that does not fit its manifest fails here, with the reason
    samples = [p for p in entry.listed("samples") if p.suffix.lower() in SAMPLE_SUFFIXES]
    images, source = gate_images(samples, entry.input_size)
    selection = select_engine(plan.specs, opener, reference.engine, images, budget_s=settings.engine_budget_s)
    for c in selection.candidates:
        log.info(
            "model %s: candidate %s/%s/%s (%s file): %s%s%s%s",
            entry.name,
            c.engine,
            c.device,
            c.precision,
            c.variant,
            c.status,
            "" if c.median_ms is None else f", {c.median_ms:.2f} ms",
            "" if c.psnr_vs_fp32_db is None else f", {c.psnr_vs_fp32_db:.1f} dB",
            f" ({c.reason})" if c.reason else "",
        )
    return ModelRuntime(
        entry, selection.engine, choice.reason, f"{selection.reason}; gate on {source}", selection.candidates
    )


def gate_images(
    sample_files: Sequence[Path], size: tuple[int, int], n: int = GATE_IMAGES
) -> tuple[np.ndarray, str]:
    """Up to ``n`` of the entry's sample images at ``size`` ([N,3,H,W] in [-1,1]) and what they are; smooth
    random images (as the export's preview uses) when the entry has none."""
    pictures = []
    for path in list(sample_files)[:n]:
        try:
            data = path.read_bytes()
            decoded = imaging.decode(data, native_hw=size, max_bytes=len(data) + 1, max_pixels=10**9)
        except Exception as e:  # an unreadable sample weakens the gate, it does not stop the service
            log.warning("gate image %s skipped: %s", path, e)
            continue
        pictures.append(to_input(decoded.pixels))
    if pictures:
        return np.concatenate(pictures).astype(np.float32), f"{len(pictures)} sample image(s) of the entry"
    rng = np.random.default_rng(0)
    low = rng.uniform(-1, 1, (2, 3, 8, 8)).astype(np.float32)
    ys = (np.linspace(0, 7, size[0])).astype(np.float32)
    xs = (np.linspace(0, 7, size[1])).astype(np.float32)
    y0, x0 = np.floor(ys).astype(int).clip(0, 6), np.floor(xs).astype(int).clip(0, 6)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (
        low[:, :, y0][:, :, :, x0] * (1 - fy) * (1 - fx)
        + low[:, :, y0 + 1][:, :, :, x0] * fy * (1 - fx)
        + low[:, :, y0][:, :, :, x0 + 1] * (1 - fy) * fx
        + low[:, :, y0 + 1][:, :, :, x0 + 1] * fy * fx
    )
    return smooth.astype(np.float32), "2 smooth random images (the entry has no samples)"
