"""Device selection shared by every stage: CUDA when present (or asked for), else CPU."""

from __future__ import annotations

import torch

from training.errors import DistillError


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda``/``cuda:N``/``cpu`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DistillError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


def exact_float32() -> None:
    """Disable TF32 so GPU results match float32 references (fixtures, parity checks)."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
