"""Device selection shared by every stage: CUDA when present (or asked for), else CPU."""

from __future__ import annotations

import torch

from core.errors import DistillError


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


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AVX-512 BF16 or AMX), so bf16 autocast pays off.

    Elsewhere bf16 is emulated and was measured many times slower than float32; read from the CPU
    flags (Linux), False when they cannot be read.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
