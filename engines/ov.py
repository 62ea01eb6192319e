"""OpenVINO as an engine, on the CPU: the fp32 ONNX file in f32 or bf16, and the INT8 QDQ file.

The ONNX file is read directly (no conversion step), its height and width fixed at the entry's native
size, and compiled for latency (one stream: every thread on one batch) and, with ``streams`` > 1, for throughput
too (that many streams, the threads split between them, one batch on each at once): with every shape static for
the batch sizes the micro-batcher forms most (1 and its ``max_batch``), and with the batch dynamic for the others
(see :class:`OpenVinoEngine`). Compiled blobs go to ``<engine cache>/openvino/<precision>`` so a restart loads them
instead of compiling again.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DistillError
from engines.base import Engine, EngineSpec, TensorSpec, check_batch, strength_dims, strength_vector

log = logging.getLogger("engines")

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the QDQ file's float parts in f32
_TYPE_NAMES = {"f32": "tensor(float)", "f16": "tensor(float16)"}


@functools.cache
def openvino_version() -> str | None:
    """The installed OpenVINO version, or None when the package is missing."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__.split("-")[0]


@functools.cache
def core() -> Any:
    """One OpenVINO Core per process (it holds the plugins)."""
    import openvino

    return openvino.Core()


def _reshape(model: Any, size: tuple[int, int], batch: int | None) -> None:
    """Fix ``model``'s input at ``size`` (height, width) and, when ``batch`` is given, its batch too (with a
    strength-conditioned model's strength [N], or [N, K] for a student of K edits: K kept as declared);
    otherwise a fixed batch stays fixed and a dynamic one dynamic."""
    import openvino

    if len(model.inputs) not in (1, 2) or not model.inputs[0].get_partial_shape().rank.is_static:
        return
    shape = model.inputs[0].get_partial_shape()
    lead = [batch] if batch is not None else [shape[0].get_length() if shape[0].is_static else -1]
    channels = shape[1].get_length() if shape[1].is_static else -1
    shapes = {model.inputs[0]: openvino.PartialShape(lead + [channels] + list(size))}
    if len(model.inputs) == 2:
        strength = model.inputs[1]
        declared = strength.get_partial_shape()
        shapes[strength] = (
            openvino.PartialShape(
                [batch] + [d.get_length() if d.is_static else -1 for d in list(declared)[1:]]
            )
            if batch is not None and declared.rank.is_static
            else declared
        )
    model.reshape(shapes)


@dataclass
class _Build:
    """One compilation of the model: the dynamic-batch model and, per static batch size, its own; a pool of free
    infer requests for each (a caller takes one, waiting while all are busy, and puts it back)."""

    compiled: Any  # the dynamic-batch model
    dynamic: queue.SimpleQueue
    static: dict[int, queue.SimpleQueue]

    def free(self, batch: int) -> queue.SimpleQueue:
        return self.static.get(batch, self.dynamic)


def _requests(compiled: Any, n: int) -> queue.SimpleQueue:
    """``n`` infer requests of ``compiled``, as a pool."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(n):
        free.put(compiled.create_infer_request())
    return free


def _compile(
    path: Path, size: tuple[int, int] | None, config: dict[str, object], static_batches: Sequence[int], n: int
) -> _Build:
    """Compile ``path`` with ``config``: the dynamic batch, then each static batch size the graph takes."""
    ov = core()
    model = ov.read_model(str(path))
    if size is not None:
        _reshape(model, size, None)
    compiled = ov.compile_model(model, "CPU", config)
    static: dict[int, queue.SimpleQueue] = {}
    batch_dim = compiled.inputs[0].get_partial_shape()
    if size is not None and batch_dim.rank.is_static and batch_dim[0].is_dynamic:
        for b in sorted(set(static_batches)):
            try:
                fixed = ov.read_model(str(path))
                _reshape(fixed, size, b)
                static[b] = _requests(ov.compile_model(fixed, "CPU", config), n)
            except Exception as e:  # a graph that fixes its batch inside: that size stays dynamic
                log.warning("%s: no static shape for batch %d (%s)", path, b, e)
    return _Build(compiled, _requests(compiled, n), static)


class OpenVinoEngine(Engine):
    """An OpenVINO model compiled for the CPU at a fixed height and width.

    A model with a dynamic batch is compiled once with the batch dynamic (any batch the micro-batcher forms;
    its declared signature) and once more per size in ``static_batches`` with every shape static, because
    OpenVINO's CPU plugin runs dynamic shapes on a slower path (measured in
    benchmarks/engine_shape_benchmark.py). A batch of a compiled static size runs on that model, any other (and
    any size the graph cannot be compiled for) on the dynamic one; they agree to float32 rounding (bit-identical
    on the shipped toyfaces-age; the tests hold them within 1e-6).

    Compiled for latency (one stream, every thread on one batch); with ``streams`` > 1 also for throughput
    (that many streams, the threads split between them). A batch that finds no other running takes the latency
    build, so a lone request keeps every thread; one that starts while another runs takes a free stream, so
    ``streams`` batches run at once, one per stream. Both builds compute the same graph at the same precision.
    """

    def __init__(
        self,
        spec: EngineSpec,
        path: Path,
        size: tuple[int, int] | None,
        *,
        threads: int = 0,
        cache_dir: Path | None = None,
        static_batches: Sequence[int] = (1,),
        streams: int = 1,
    ) -> None:
        if spec.engine != "openvino" or spec.device != "cpu" or spec.precision not in OV_PRECISION:
            raise DistillError(f"OpenVINO runs fp32, bf16 or int8 on the CPU, not {spec.label}")
        if openvino_version() is None:
            raise DistillError(
                "OpenVINO is not installed: pip install openvino (or DISTILL_ENGINE=onnxruntime)"
            )
        if streams < 1:
            raise DistillError(f"OpenVINO needs at least one stream, not {streams}")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": OV_PRECISION[spec.precision]}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            if cache_dir is not None:
                folder = cache_dir / "openvino" / spec.precision
                folder.mkdir(parents=True, exist_ok=True)
                config["CACHE_DIR"] = str(folder)
            self.latency = _compile(path, size, {**config, "PERFORMANCE_HINT": "LATENCY"}, static_batches, 1)
            self.throughput = (
                _compile(
                    path,
                    size,
                    {**config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": streams},
                    static_batches,
                    streams,
                )
                if streams > 1
                else None
            )
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise DistillError(f"{path}: OpenVINO cannot compile it for {spec.label} ({e})") from e
        self.spec, self.path = spec, Path(path)
        self.streams = streams
        self.compiled = self.latency.compiled
        self.static = self.latency.static  # batch size -> free infer requests of the static model
        self.conditional = len(self.compiled.inputs) == 2  # input, strength
        self.strength_dims: tuple[int, ...] = ()  # [N]: one edit; [N, K]: a student of K edits
        if self.conditional:
            shape = self.compiled.inputs[1].get_partial_shape()
            dims = [d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else []
            try:
                self.strength_dims = strength_dims(dims)
            except ValueError as e:
                raise DistillError(f"{path}: {e}; re-export it") from e
        self._running = 0  # batches in progress
        self._count = threading.Lock()

    def run(self, batch: np.ndarray, strength: np.ndarray | None = None) -> np.ndarray:
        """Run one batch: on the latency build when no other batch runs, else on a free stream."""
        check_batch(batch)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        feed = (
            {0: x, 1: strength_vector(len(x), strength, self.strength_dims)} if self.conditional else {0: x}
        )
        with self._count:
            alone = self._running == 0
            self._running += 1
        try:
            build = self.latency if alone or self.throughput is None else self.throughput
            free = build.free(len(x))
            request = free.get()
            try:
                y = request.infer(feed)[0]
                return np.array(y, dtype=np.float32, copy=True)
            finally:
                free.put(request)  # before the count drops: a batch that finds none running finds it free
        finally:
            with self._count:
                self._running -= 1

    def signature(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(port: Any) -> TensorSpec:
            shape = port.get_partial_shape()
            dims = (
                tuple(d.get_length() if d.is_static else None for d in shape) if shape.rank.is_static else ()
            )
            name = port.get_any_name() if port.get_names() else ""
            return TensorSpec(name, _TYPE_NAMES.get(port.get_element_type().get_type_name(), "other"), dims)

        return [spec(p) for p in self.compiled.inputs], [spec(p) for p in self.compiled.outputs]
