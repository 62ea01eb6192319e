"""The CPU's instruction-set features that decide which precisions run natively (read from /proc/cpuinfo)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

# feature -> the /proc/cpuinfo flags that provide it (any of them)
ISA_FLAGS = {
    "AVX2": ("avx2",),
    "AVX-512": ("avx512f",),
    "VNNI": ("avx512_vnni", "avx_vnni"),
    "AVX-512 BF16": ("avx512_bf16",),
    "AMX": ("amx_bf16", "amx_int8", "amx_tile"),
}


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def isa_features(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """AVX2, AVX-512, VNNI, AVX-512 BF16 and AMX: present or not."""
    flags = cpu_flags() if flags is None else flags
    return {name: any(f in flags for f in wanted) for name, wanted in ISA_FLAGS.items()}


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 is emulated and slower."""
    features = isa_features(flags)
    return features["AVX-512 BF16"] or features["AMX"]


def isa_line() -> str:
    """``AVX2 yes, AVX-512 yes, VNNI yes, AVX-512 BF16 yes, AMX no`` for logs and benchmark tables."""
    return ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in isa_features().items())


def cpu_model() -> str:
    """This machine's CPU model name and logical CPU count."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"
