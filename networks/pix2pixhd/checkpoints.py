"""Load pix2pixHD generators: NVIDIA's ``latest_net_G.pth`` and this project's checkpoints.

Two containers are accepted, both read with ``torch.load(weights_only=True)`` (no code runs):

* NVIDIA pix2pixHD ``save_network`` output: a flat state_dict (``model.N.*``, plus ``model{n}_1.*`` and
  ``model{n}_2.*`` for a LocalEnhancer); a ``module.`` prefix left by DataParallel is stripped.
  The architecture is read from the tensor shapes and key layout (:func:`infer_config`).
* Our checkpoint dict ``{"format": "pix2pixhd-distill/1", "config": asdict(cfg), "G": state_dict, ...}``
  written by the trainer; when it holds ``G_ema`` (the moving average of G's weights), that is the generator
  loaded (the other entries, optimiser and RNG states, are ignored here).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.atomic import atomic_torch_save
from core.errors import DistillError
from networks.pix2pixhd.config import Pix2PixHDConfig, check_field_names
from networks.pix2pixhd.networks import build_generator

CHECKPOINT_FORMAT = "pix2pixhd-distill/1"
_GLOBAL_FIELDS = ("input_nc", "output_nc", "ngf", "netG", "n_downsample_global", "n_blocks_global")
_LOCAL_FIELDS = ("n_local_enhancers", "n_blocks_local")
_TOP = re.compile(r"^model\.(\d+)\.weight$")
_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.1\.weight$")
_ENHANCER = re.compile(r"^model(\d+)_1\.1\.weight$")


def structural_fields(cfg: Pix2PixHDConfig) -> tuple[str, ...]:
    """The config fields that determine the generator's tensors."""
    return _GLOBAL_FIELDS + (_LOCAL_FIELDS if cfg.netG == "local" else ())


def strip_module_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` prefix of (Distributed)DataParallel and ``_orig_mod.`` of torch.compile."""
    sd = dict(state_dict)
    for prefix in ("module.", "_orig_mod.", "module."):
        if sd and all(isinstance(k, str) and k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise DistillError(f"not a pix2pixHD generator state_dict: {msg}")


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> Pix2PixHDConfig:
    """Read the generator architecture from tensor shapes and keys (NVIDIA's layer indices).

    Only the generator fields are inferred; the discriminator, loss and optimiser fields keep their defaults.
    """
    sd = strip_module_prefix(state_dict)
    if any(k.startswith("scale0_layer0.") or k.startswith("layer0.") for k in sd):
        raise DistillError(
            "this is a pix2pixHD discriminator state_dict (latest_net_D.pth keys scale0_layer0...); "
            "pass the generator's file, latest_net_G.pth"
        )
    _expect("model.1.weight" in sd, "missing 'model.1.weight' (the first 7x7 conv of the global generator)")
    first = sd["model.1.weight"]
    _expect(
        first.dim() == 4 and tuple(first.shape[2:]) == (7, 7),
        f"model.1.weight has shape {list(first.shape)}, expected [ngf, input_nc, 7, 7]",
    )
    input_nc = int(first.shape[1])
    top = sorted(int(m.group(1)) for k in sd if (m := _TOP.match(k)))
    n_blocks_global = len({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    enhancers = sorted(int(m.group(1)) for k in sd if (m := _ENHANCER.match(k)))
    if enhancers:
        L = len(enhancers)
        _expect(
            enhancers == list(range(1, L + 1)),
            f"local enhancer keys model{{n}}_1 must run 1..{L}, found {enhancers}",
        )
        _expect(
            (len(top) - 1) % 2 == 0, f"unexpected number of top-level 'model.N.weight' convs ({len(top)})"
        )
        nd = (len(top) - 1) // 2
        ngf = int(sd[f"model{L}_1.1.weight"].shape[0])
        _expect(
            int(first.shape[0]) == ngf * 2**L,
            f"global part has {first.shape[0]} filters, expected ngf*2**L = {ngf * 2**L}",
        )
        n_blocks_local = len(
            {k.split(".")[1] for k in sd if k.startswith(f"model{L}_2.") and ".conv_block." in k}
        )
        last = f"model{L}_2.{n_blocks_local + 4}.weight"
        _expect(last in sd, f"missing {last!r} (the output conv of the last local enhancer)")
        output_nc = int(sd[last].shape[0])
        return Pix2PixHDConfig(
            input_nc=input_nc,
            output_nc=output_nc,
            ngf=ngf,
            netG="local",
            n_downsample_global=nd,
            n_blocks_global=n_blocks_global,
            n_local_enhancers=L,
            n_blocks_local=n_blocks_local,
        )
    _expect(
        len(top) >= 2 and len(top) % 2 == 0,
        f"unexpected number of top-level 'model.N.weight' convs ({len(top)})",
    )
    nd = (len(top) - 2) // 2
    output_nc = int(sd[f"model.{top[-1]}.weight"].shape[0])
    return Pix2PixHDConfig(
        input_nc=input_nc,
        output_nc=output_nc,
        ngf=int(first.shape[0]),
        netG="global",
        n_downsample_global=nd,
        n_blocks_global=n_blocks_global,
    )


def load_state_dict_checked(net: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load that names the missing, unexpected and wrongly-shaped keys (assigns tensors into a meta-device net)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k}: {list(state_dict[k].shape)} vs expected {list(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and (not isinstance(state_dict[k], torch.Tensor) or state_dict[k].shape != v.shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for name, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong),
        ):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{name}: {', '.join(items[:5])}{more}")
        cfg = getattr(net, "config", None)
        arch = f" for {describe(cfg)}" if cfg is not None else ""
        raise DistillError(f"{source}: weights do not fit the generator{arch}; " + "; ".join(parts))
    is_meta = any(p.is_meta for p in net.parameters())
    state = {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}
    net.load_state_dict(state, strict=True, assign=is_meta)


def describe(cfg: Pix2PixHDConfig) -> str:
    """One line naming the generator architecture."""
    s = (
        f"netG={cfg.netG} input_nc={cfg.input_nc} output_nc={cfg.output_nc} ngf={cfg.ngf} "
        f"n_downsample_global={cfg.n_downsample_global} n_blocks_global={cfg.n_blocks_global}"
    )
    if cfg.netG == "local":
        s += f" n_local_enhancers={cfg.n_local_enhancers} n_blocks_local={cfg.n_blocks_local}"
    return s


def _read(path: Path) -> Any:
    if not path.is_file():
        raise DistillError(
            f"{path}: no such file; expected a pix2pixHD generator (latest_net_G.pth or a distill checkpoint .pt)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DistillError(
            f"{path}: cannot be read as a torch checkpoint of tensors ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "expected NVIDIA pix2pixHD's latest_net_G.pth (a state_dict) or a checkpoint written by `distill train`"
        ) from None


def _split(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Pix2PixHDConfig | None]:
    """(generator state_dict, stored config or None) from either container."""
    if isinstance(obj, Mapping) and "format" in obj:
        if obj["format"] != CHECKPOINT_FORMAT:
            raise DistillError(
                f"{path}: checkpoint format {obj['format']!r} is not supported; expected {CHECKPOINT_FORMAT!r}"
            )
        if not isinstance(obj.get("G"), Mapping) or not isinstance(obj.get("config"), Mapping):
            raise DistillError(
                f"{path}: {CHECKPOINT_FORMAT} checkpoint lacks its 'G' state_dict or 'config' dict"
            )
        weights = obj["G_ema"] if isinstance(obj.get("G_ema"), Mapping) else obj["G"]
        return strip_module_prefix(weights), Pix2PixHDConfig.from_dict(dict(obj["config"]))
    if (
        isinstance(obj, Mapping)
        and obj
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        return strip_module_prefix(obj), None
    kind = type(obj).__name__
    keys = f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else ""
    raise DistillError(
        f"{path}: holds a {kind}{keys}; expected a pix2pixHD generator state_dict (NVIDIA latest_net_G.pth) "
        f"or a {CHECKPOINT_FORMAT!r} checkpoint dict"
    )


def load_generator(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """Build and load a generator from ``path``; eval mode, on CPU, ``G.config`` set.

    ``overrides`` set config fields (e.g. training options). Fields that fix the tensors' shapes must agree
    with the checkpoint; a conflicting value raises DistillError.
    """
    path = Path(path)
    check_field_names(overrides, "override")
    sd, stored = _split(_read(path), path)
    inferred = infer_config(sd)
    if stored is not None and stored.condition == "plane":  # a strength plane per edit beside the image
        inferred = inferred.replace(input_nc=inferred.input_nc - stored.n_edits)
    cfg = stored if stored is not None else inferred
    for name in structural_fields(inferred):
        if getattr(cfg, name) != getattr(inferred, name):
            raise DistillError(
                f"{path}: the stored config says {name}={getattr(cfg, name)!r} but the weights have {getattr(inferred, name)!r}"
            )
    for name, value in overrides.items():
        if name in structural_fields(inferred) and value != getattr(inferred, name):
            raise DistillError(
                f"{path}: {name}={value!r} was requested but the checkpoint's generator has {name}={getattr(inferred, name)!r} "
                f"({describe(inferred)})"
            )
    cfg = cfg.replace(**overrides)
    with torch.device("meta"):  # no throw-away initialisation: the checkpoint's tensors are assigned
        net = build_generator(cfg, init=False)
    load_state_dict_checked(net, sd, str(path))
    return net.eval()


def save_generator(
    net: nn.Module, path: str | os.PathLike, cfg: Pix2PixHDConfig | None = None, **extra: Any
) -> Path:
    """Write ``{"format", "config", "G", **extra}`` atomically (the trainer adds optimiser/RNG state as extra)."""
    cfg = cfg if cfg is not None else getattr(net, "config", None)
    if cfg is None:
        raise DistillError("save_generator: pass cfg (the network has no .config)")
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return atomic_torch_save(
        path, {"format": CHECKPOINT_FORMAT, "config": dataclasses.asdict(cfg), "G": state, **extra}
    )
