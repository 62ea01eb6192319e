"""ONNX Runtime sessions for model-zoo entries: provider choice, variant choice, threads, warm-up, I/O binding.

``auto`` picks the CUDA execution provider when onnxruntime is the GPU build *and* a device answers
(the session is created and its providers checked), else the CPU provider, logging why. On CUDA the
fp16/INT8 variant named in the settings is used (falling back to fp32 when the entry lacks it) and
inputs/outputs go through I/O binding; cuDNN's exhaustive algorithm search happens per input shape,
so warm-up runs every batch size the micro-batcher can form before the service reports ready.

Before warm-up, :meth:`ModelRuntime.check_contract` holds the ONNX model to its manifest (one float
input and output, [N, 3, H, W] at the manifest's size, the output the input's shape): a model that
loads but does not fit (another model copied into the entry) is refused at start with the reason,
instead of answering every request with a 500.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from app.config import Settings
from model_zoo.registry import ModelEntry
from training.errors import DistillError

log = logging.getLogger("app.runtime")

CUDA_EP = "CUDAExecutionProvider"
CPU_EP = "CPUExecutionProvider"
_SHORT = {CUDA_EP: "cuda", CPU_EP: "cpu"}
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


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
    return ProviderChoice("cpu", f"auto: onnxruntime {ort.__version__} has no CUDA provider ({', '.join(available)})")


def session_options(settings: Settings) -> ort.SessionOptions:
    """Graph optimisations ALL, sequential execution, the configured thread counts."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = settings.intra_op_threads
    opts.inter_op_num_threads = settings.inter_op_threads
    return opts


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


@dataclass
class ModelRuntime:
    """One ONNX Runtime session serving one model-zoo entry."""

    entry: ModelEntry
    session: ort.InferenceSession
    provider: str  # "cuda" or "cpu": what the session actually runs on
    variant: str
    provider_reason: str
    input_name: str = field(init=False)
    output_name: str = field(init=False)
    input_dtype: type = field(init=False)
    io_binding: bool = field(init=False)  # on CUDA: inputs and outputs bound to device memory explicitly

    def __post_init__(self) -> None:
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = _NP_TYPES.get(inp.type, np.float32)
        self.io_binding = self.provider == "cuda"

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def batch_limit(self) -> int | None:
        """The model's fixed batch size when its ONNX input has one (then no micro-batching), else None."""
        dim = self.session.get_inputs()[0].shape[0]
        return dim if isinstance(dim, int) and dim > 0 else None

    @property
    def native_hw(self) -> tuple[int, int]:
        return self.entry.input_size

    def run(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N,3,H,W] in [-1,1] -> float32 [N,3,H,W]; blocking (call it from a worker thread)."""
        assert batch.ndim == 4 and batch.shape[1] == 3, f"expected [N,3,H,W], got {batch.shape}"
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        if self.io_binding:
            device = "cuda" if self.provider == "cuda" else "cpu"
            binding = self.session.io_binding()
            binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(x, device, 0))
            binding.bind_output(self.output_name, device)
            self.session.run_with_iobinding(binding)
            y = binding.copy_outputs_to_cpu()[0]
        else:
            y = self.session.run([self.output_name], {self.input_name: x})[0]
        return y.astype(np.float32, copy=False)

    def check_contract(self) -> None:
        """DistillError naming the file and what differs when the model's input or output is not the manifest's
        [N, 3, H, W] float tensor, checked on the declared shapes and on one inference at the native size."""
        h, w = self.native_hw
        path = self.entry.variant_path(self.variant)
        fix = f"re-export the entry (`distill export RUN --out {self.entry.path}`) or fix input.size in its manifest"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise DistillError(f"{path}: model {self.name!r} has {len(inputs)} inputs and {len(outputs)} outputs; "
                               f"a student has one input and one output; {fix}")
        for role, arg in (("input", inputs[0]), ("output", outputs[0])):
            declared = list(arg.shape)
            fixed = [d if isinstance(d, int) else None for d in declared]
            if arg.type not in _NP_TYPES or len(declared) != 4 or any(
                d is not None and d != want for d, want in zip(fixed[1:], (3, h, w), strict=True)
            ):
                shape = ", ".join("?" if d is None else str(d) for d in declared)
                raise DistillError(f"{path}: model {self.name!r} declares {role} {arg.type} [{shape}]; the manifest "
                                   f"says float [N, 3, {h}, {w}]; {fix}")
        try:
            y = self.run(np.zeros((1, 3, h, w), np.float32))
        except Exception as e:  # onnxruntime's own exception types
            raise DistillError(f"{path}: model {self.name!r} fails on a [1, 3, {h}, {w}] input ({e}); {fix}") from e
        if y.shape != (1, 3, h, w):
            raise DistillError(f"{path}: model {self.name!r} answers a [1, 3, {h}, {w}] input with {list(y.shape)}; "
                               f"a student returns its input's shape; {fix}")

    def warm_up(self, runs: int, max_batch: int) -> float:
        """Run ``runs`` times at batch 1 (and, on CUDA, once at every batch size up to ``max_batch``); seconds spent."""
        h, w = self.native_hw
        t0 = time.perf_counter()
        rng = np.random.default_rng(0)
        sizes = [1] * runs + (list(range(2, max_batch + 1)) if self.provider == "cuda" and runs else [])
        for n in sizes:
            self.run(rng.uniform(-1, 1, (n, 3, h, w)).astype(np.float32))
        return time.perf_counter() - t0


def load_runtime(entry: ModelEntry, settings: Settings) -> ModelRuntime:
    """Create the session for ``entry`` on the configured provider and variant (see the module docstring)."""
    choice = choose_provider(settings.provider)
    runtime = _create_runtime(entry, settings, choice)
    if choice.name == "cuda" and runtime.provider != "cuda":
        if settings.provider == "cuda":
            raise DistillError(f"provider cuda: the CUDA provider did not start for {entry.name!r} (no GPU visible?)")
        reason = "auto: the CUDA provider did not start (no GPU visible?), using CPU"
        log.warning("model %s: %s", entry.name, reason)
        runtime = _create_runtime(entry, settings, ProviderChoice("cpu", reason))
    return runtime


def _create_runtime(entry: ModelEntry, settings: Settings, choice: ProviderChoice) -> ModelRuntime:
    wanted = settings.variant_cuda if choice.name == "cuda" else settings.variant_cpu
    variant, why = choose_variant(entry, choice.name, wanted)
    if variant != wanted:
        log.warning("model %s: using the fp32 variant on %s (%s)", entry.name, choice.name, why)
    providers: list[str | tuple[str, dict]] = [CPU_EP]
    if choice.name == "cuda":
        providers.insert(0, (CUDA_EP, {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}))
    path = entry.variant_path(variant)
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options(settings), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable/invalid models
        raise DistillError(f"{path}: ONNX Runtime cannot load model {entry.name!r} ({e}); re-export it") from e
    actual = _SHORT.get(session.get_providers()[0], "cpu")
    return ModelRuntime(entry=entry, session=session, provider=actual, variant=variant, provider_reason=choice.reason)
