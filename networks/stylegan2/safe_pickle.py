"""Read NVlabs network pickles (``network-snapshot-*.pkl``) without executing any code from them.

NVlabs pickles store every network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``,
where ``meta`` holds the class's full Python source and the module ``__dict__``; a normal unpickle
runs that source. Here a restricted :class:`pickle.Unpickler` resolves only an allow-list of globals
(tensor rebuild functions, ``OrderedDict``, sets, numpy arrays), routes the persistence hook to
:class:`PersistentRecord` (which just keeps ``meta``) and TensorFlow-era ``Network`` objects to a
plain-dict record, and refuses every other class with a :class:`DistillError`. Tensor storages are decoded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import io
import pickle
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import torch

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

from core.errors import DistillError
from networks.stylegan2.tf_pickle import TFNetworkRecord

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first object of a pre-1.6 (non-zip) torch.save file


@dataclass
class PersistentRecord:
    """What NVlabs' persistence hook received: class name and the object's ``__dict__`` (``state``)."""

    class_name: str
    state: dict


class _PlainDict(dict):
    """Stand-in for ``dnnlib.EasyDict`` (a dict subclass): keeps the items, ignores attribute state."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise DistillError(
            "a persistent object record has an unexpected layout "
            "(expected NVlabs torch_utils.persistence 'class' records)"
        )
    return PersistentRecord(class_name=str(meta.get("class_name")), state=meta["state"])


def _load_storage_from_bytes(data: bytes) -> Any:
    """Replacement for ``torch.storage._load_from_bytes`` that never unpickles arbitrary objects."""
    if not isinstance(data, bytes):
        raise DistillError(f"a tensor storage record holds {type(data).__name__}, not bytes")
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as e:
        reason = [line.strip() for line in str(e).splitlines() if line.strip().startswith("Unsupported")]
        raise DistillError(
            "a tensor storage is not plain tensor data; torch.load(weights_only=True) "
            f"refused it ({' '.join(reason) or type(e).__name__})"
        ) from e


def _allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
        ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
        ("torch", "Tensor"): torch.Tensor,
        ("torch", "Size"): torch.Size,
        ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles
        ("dnnlib.util", "EasyDict"): _PlainDict,
        ("dnnlib", "EasyDict"): _PlainDict,
        ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _np_multiarray._reconstruct
        allowed[(mod, "scalar")] = _np_multiarray.scalar
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allow-listed globals; anything else raises :class:`DistillError`."""

    def __init__(self, file: BinaryIO):
        super().__init__(file)
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        # Protocol <= 2 pickles name Python 2 modules (``__builtin__.set``); map them as pickle does.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self._allowed.get((module, name))
        if found is not None:
            return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise DistillError(
            f"refusing to unpickle {module}.{name}: only tensors, plain values "
            "and NVlabs persistent network records are allowed (the file may be malicious or "
            "not a StyleGAN2 network pickle)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise DistillError(
            "unexpected persistent id in a plain pickle; torch.save files are loaded with torch.load instead"
        )


def safe_load(file: BinaryIO, source: str = "pickle") -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`; refusals and malformed data raise
    :class:`DistillError` prefixed with ``source``."""
    try:
        return RestrictedUnpickler(file).load()
    except DistillError as e:
        raise DistillError(f"{source}: {e}") from e
    except Exception as e:  # truncated or corrupt stream: any error the pickle machinery raises
        raise DistillError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e


def module_state_dict(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a persistent ``torch.nn.Module`` record into a state_dict (``_parameters``, persistent
    ``_buffers``, then ``_modules`` recursively), as ``Module.state_dict()`` would."""
    state = record.state
    out: dict[str, torch.Tensor] = {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, value in (state.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + name] = value.detach()
    for name, value in (state.get("_buffers") or {}).items():
        if value is not None and name not in non_persistent:
            out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise DistillError(
                f"submodule {prefix + name} is a {type(child).__name__}, not an NVlabs persistent module"
            )
        out.update(module_state_dict(child, prefix + name + "."))
    return out


def plain(value: Any) -> Any:
    """Convert ``_PlainDict``/OrderedDict trees (e.g. ``_init_kwargs``) into plain dicts."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value
