"""ONNX Runtime as an engine: the CPU provider, CUDA (I/O binding), and TensorRT where the build has it.

TensorRT runs the fp32 file and builds its own engine (fp16 when the precision says so), cached under
``<engine cache>/tensorrt`` so a restart does not rebuild it; CUDA and CPU stay behind it as fallbacks
for the nodes it does not take.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from core.errors import DistillError
from engines.base import Engine, EngineSpec, TensorSpec, check_batch, strength_dims, strength_vector
from model_zoo.schema import STRENGTH_INPUT

log = logging.getLogger("engines")

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"
SHORT = {CUDA_EP: "cuda", CPU_EP: "cpu", TRT_EP: "tensorrt"}
NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def available_devices() -> list[str]:
    """The devices this onnxruntime build can target: ``cpu``, plus ``cuda`` and ``tensorrt`` in GPU builds."""
    providers = ort.get_available_providers()
    return ["cpu"] + [SHORT[p] for p in (CUDA_EP, TRT_EP) if p in providers]


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0) -> ort.SessionOptions:
    """Graph optimisations ALL, sequential execution, the given thread counts (0 = ONNX Runtime's default)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = inter_op_threads
    opts.log_severity_level = 3
    return opts


def cpu_session(path: str | Path, threads: int = 0) -> ort.InferenceSession:
    """A bare ONNX Runtime CPU session with the engines' options (``threads`` 0 = ONNX Runtime's default): what
    the export's variant gate and tests run a model through when they need the session itself."""
    return ort.InferenceSession(str(path), sess_options=session_options(threads), providers=[CPU_EP])


def providers_for(spec: EngineSpec, cache_dir: Path | None) -> list[str | tuple[str, dict]]:
    """The execution providers, in priority order, for ``spec``'s device."""
    cuda = (CUDA_EP, {"cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True})
    if spec.device == "cpu":
        return [CPU_EP]
    if spec.device == "cuda":
        return [cuda, CPU_EP]
    trt: dict[str, object] = {"trt_fp16_enable": spec.precision == "fp16"}
    if cache_dir is not None:
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "tensorrt"))
    return [(TRT_EP, trt), cuda, CPU_EP]


class OrtEngine(Engine):
    """One ONNX Runtime session; on CUDA/TensorRT the input and output go through I/O binding."""

    def __init__(
        self,
        spec: EngineSpec,
        path: Path,
        *,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        if spec.device == "tensorrt" and cache_dir is not None:
            (cache_dir / "tensorrt").mkdir(parents=True, exist_ok=True)
        try:
            self.session = ort.InferenceSession(
                str(path),
                sess_options=session_options(intra_op_threads, inter_op_threads),
                providers=providers_for(spec, cache_dir),
            )
        except Exception as e:  # onnxruntime raises its own exception types for unreadable/invalid models
            raise DistillError(f"{path}: ONNX Runtime cannot load it ({e}); re-export it") from e
        actual = SHORT.get(self.session.get_providers()[0], "cpu")
        if actual != spec.device:
            raise DistillError(
                f"{path}: the {spec.device} provider did not start (no GPU visible?); "
                f"the session runs on {actual}"
            )
        self.spec, self.path = spec, Path(path)
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self.input_name, self.output_name = inp.name, out.name
        self.input_dtype = NP_TYPES.get(inp.type, np.float32)
        strength = [i for i in self.session.get_inputs() if i.name == STRENGTH_INPUT]
        self.conditional = bool(strength)
        try:  # [N]: one edit; [N, K]: a student of K edits
            self.strength_dims = strength_dims(strength[0].shape) if strength else ()
        except ValueError as e:
            raise DistillError(f"{path}: {e}; re-export it") from e
        self.io_binding = spec.device != "cpu"

    def run(self, batch: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
        check_batch(batch)
        x = np.ascontiguousarray(batch, dtype=self.input_dtype)
        feed = {self.input_name: x}
        if self.conditional:
            feed[STRENGTH_INPUT] = strength_vector(len(x), strength, self.strength_dims)
        if self.io_binding:
            device = "cpu" if self.spec.device == "cpu" else "cuda"
            binding = self.session.io_binding()
            for name, value in feed.items():
                binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value, device, 0))
            binding.bind_output(self.output_name, device)
            self.session.run_with_iobinding(binding)
            y = binding.copy_outputs_to_cpu()[0]
        else:
            y = self.session.run([self.output_name], feed)[0]
        return y.astype(np.float32, copy=False)

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(arg: ort.NodeArg) -> TensorSpec:
            return TensorSpec(arg.name, arg.type, tuple(arg.shape))

        return [spec(a) for a in self.session.get_inputs()], [spec(a) for a in self.session.get_outputs()]
