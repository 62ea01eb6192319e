"""Any user-supplied ONNX classifier or regressor as a scorer (age, attractiveness, artifact, ...).

The model takes float32 NCHW RGB: images are resized (bilinear) to its input size, scaled to [0,1]
and normalised with ``(x - mean) / std`` per channel. Named scores are picked by index from the
first output (flattened per image), optionally after a sigmoid or softmax.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.errors import DistillError
from training.scoring import Scorer


class OnnxScorer(Scorer):
    """Scores ``outputs`` (name -> index in the first output) with an ONNX model on the CPU (or CUDA)."""

    name = "onnx"

    def __init__(
        self,
        path: str | os.PathLike,
        outputs: dict[str, int],
        input_size: tuple[int, int] | int | None = None,
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        activation: str = "none",
        providers: Sequence[str] | None = None,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise DistillError(f"{self.path}: ONNX model not found")
        try:
            self.session = ort.InferenceSession(
                str(self.path), providers=list(providers or ort.get_available_providers())
            )
        except Exception as e:
            raise DistillError(f"{self.path}: ONNX Runtime cannot load it ({e})") from e
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if len(inp.shape) != 4:
            raise DistillError(f"{self.path}: input {inp.name} has shape {inp.shape}; expected NCHW images")
        if isinstance(inp.shape[1], int) and inp.shape[1] != 3:
            raise DistillError(f"{self.path}: input has {inp.shape[1]} channels; expected 3 (RGB)")
        model_hw = tuple(inp.shape[2:])
        if input_size is None:
            if not all(isinstance(s, int) for s in model_hw):
                raise DistillError(
                    f"{self.path}: input size is dynamic {model_hw}; give it (e.g. --input-size 224)"
                )
            input_size = model_hw  # type: ignore[assignment]
        hw = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if all(isinstance(s, int) for s in model_hw) and model_hw != hw:
            raise DistillError(
                f"{self.path}: model input is {model_hw[0]}x{model_hw[1]}, not the given {hw[0]}x{hw[1]}"
            )
        self.input_size = (int(hw[0]), int(hw[1]))
        self.fixed_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.mean = self._per_channel(mean, "mean")
        self.std = self._per_channel(std, "std")
        if np.any(self.std == 0):
            raise DistillError(f"{self.path}: --std must not be 0")
        if activation not in ("none", "sigmoid", "softmax"):
            raise DistillError(f"activation {activation!r}: choose none, sigmoid or softmax")
        self.activation = activation
        if not outputs:
            raise DistillError(f"{self.path}: name at least one output, e.g. --attribute age=0")
        self.outputs = dict(outputs)
        self.output_width: int | None = None  # values per image in the first output, known after a score

    @staticmethod
    def _per_channel(values: Sequence[float], what: str) -> np.ndarray:
        v = np.asarray(values, dtype=np.float32).reshape(-1)
        if v.size not in (1, 3):
            raise DistillError(f"--{what}: give one value or three (R,G,B)")
        return np.broadcast_to(v, (3,)).reshape(1, 3, 1, 1).astype(np.float32)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N,H,W,3] -> normalised float32 [N,3,h,w] at the model's input size."""
        h, w = self.input_size
        resized = [
            im if im.shape[:2] == (h, w) else np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR))
            for im in images
        ]
        x = np.stack(resized).astype(np.float32).transpose(0, 3, 1, 2) / 255.0
        return (x - self.mean) / self.std

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is not None and self.fixed_batch != len(x):
            if self.fixed_batch != 1:
                raise DistillError(
                    f"{self.path}: model has a fixed batch size {self.fixed_batch}; export it with 1 or dynamic"
                )
            return np.concatenate([self._run(x[i : i + 1]) for i in range(len(x))])
        y = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64)
        return y.reshape(len(x), -1)

    def score(self, images: np.ndarray) -> list[dict[str, float]]:
        assert images.ndim == 4 and images.shape[-1] == 3 and images.dtype == np.uint8, images.shape
        y = self._run(self.preprocess(images))
        self.output_width = y.shape[1]
        if self.activation == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-y))
        elif self.activation == "softmax":
            e = np.exp(y - y.max(axis=1, keepdims=True))
            y = e / e.sum(axis=1, keepdims=True)
        bad = [f"{k}={i}" for k, i in self.outputs.items() if not -y.shape[1] <= i < y.shape[1]]
        if bad:
            raise DistillError(
                f"{self.path}: output has {y.shape[1]} values per image; index out of range: {', '.join(bad)}"
            )
        return [{k: float(row[i]) for k, i in self.outputs.items()} for row in y]
