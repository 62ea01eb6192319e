"""Load and save StyleGAN2 generators from every supported checkpoint format.

Formats (detected from the file's content, not its name):

* ``nvlabs-pkl``: NVlabs stylegan2-ada-pytorch / stylegan3 network pickle; ``G_ema`` is read with
  the restricted unpickler of :mod:`networks.stylegan2.safe_pickle` (no code from the file runs).
* ``tensorflow-pkl``: the original TensorFlow StyleGAN2 pickle ``(G, D, Gs)``; ``Gs`` is re-keyed
  with NVlabs ``legacy.py``'s rules (:mod:`networks.stylegan2.tf_pickle`), same restricted unpickler.
* ``nvlabs-state-dict``: ``torch.save(G.state_dict())`` of NVlabs' ``Generator`` (bare, or under a
  ``"G_ema"`` key).
* ``rosinality``: rosinality stylegan2-pytorch checkpoint ``{"g_ema": sd, "latent_avg": ...}``
  (``train.py`` or ``convert_weight.py`` output) or its bare ``g_ema`` state_dict.
* ``stylegan2-distill/1``: this project's own file, written by :func:`save_generator`.

Everything the network shape needs is inferred from the tensors; rosinality tensors are re-keyed to
NVlabs names, so one network implementation serves all formats.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from core.atomic import atomic_torch_save
from core.errors import DistillError
from networks.stylegan2 import safe_pickle
from networks.stylegan2.networks import Generator
from networks.stylegan2.tf_pickle import TFNetworkRecord, convert_tf_generator

log = logging.getLogger(__name__)

FORMAT = "stylegan2-distill/1"
EXPECTED = (
    "an NVlabs network pickle (.pkl holding G_ema, or a TensorFlow StyleGAN2 (G, D, Gs) pickle), an NVlabs Generator state_dict "
    "(mapping.fc0.weight, synthesis.b4.const, ...), a rosinality stylegan2-pytorch checkpoint "
    "({'g_ema': ..., 'latent_avg': ...}) or its bare state_dict (style.1.weight, input.input, ...), "
    f"or a '{FORMAT}' file written by save_generator"
)
OVERRIDABLE = ("conv_clamp", "lr_multiplier", "w_avg_beta")
W_AVG_SAMPLES = 4096
W_AVG_SEED = 0


# ----------------------------------------------------------------------------
# Config inference.


def _filter_taps(f: torch.Tensor) -> list[float]:
    """1D taps of a separable 2D resample filter outer(t, t) / sum(t)^2 (its row sums)."""
    return [float(t) for t in f.double().sum(dim=1)]


def infer_config(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Generator kwargs from an NVlabs-keyed state_dict: resolution, dims, depth, channels, architecture."""
    if "mapping.embed.weight" in sd:
        raise DistillError(
            "conditional StyleGAN2 generators (c_dim > 0, mapping.embed.*) are not supported; "
            "use an unconditional checkpoint"
        )
    if any(k.startswith(("synthesis.input.", "synthesis.L0_")) for k in sd):
        raise DistillError(
            "this is a StyleGAN3 (alias-free) generator, which is not supported; "
            "use a StyleGAN2 checkpoint (the stylegan3 repo's --cfg=stylegan2 pickles work)"
        )
    mapping_layers = 0
    while f"mapping.fc{mapping_layers}.weight" in sd:
        mapping_layers += 1
    if mapping_layers == 0 or "synthesis.b4.const" not in sd:
        raise DistillError("state_dict has no mapping.fc0.weight / synthesis.b4.const; expected " + EXPECTED)
    z_dim = int(sd["mapping.fc0.weight"].shape[1])
    w_dim = int(sd[f"mapping.fc{mapping_layers - 1}.weight"].shape[0])
    hidden = int(sd["mapping.fc0.weight"].shape[0])
    resolutions = sorted({int(m.group(1)) for k in sd if (m := re.match(r"synthesis\.b(\d+)\.", k))})
    img_resolution = resolutions[-1]
    expected_res = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
    if resolutions != expected_res:
        raise DistillError(
            f"synthesis blocks {resolutions} are not the power-of-two chain 4..{img_resolution}"
        )
    channels = {4: int(sd["synthesis.b4.const"].shape[0])}
    for res in expected_res[1:]:
        channels[res] = int(sd[f"synthesis.b{res}.conv1.weight"].shape[0])
    last_torgb = f"synthesis.b{img_resolution}.torgb.weight"
    if last_torgb not in sd:
        raise DistillError(f"state_dict has no {last_torgb}; expected " + EXPECTED)
    if any(k.endswith(".skip.weight") for k in sd):
        architecture = "resnet"
    elif img_resolution > 4 and "synthesis.b4.torgb.weight" not in sd:
        architecture = "orig"
    else:
        architecture = "skip"
    taps = (
        _filter_taps(sd["synthesis.b4.resample_filter"])
        if "synthesis.b4.resample_filter" in sd
        else [1, 3, 3, 1]
    )
    return dict(
        z_dim=z_dim,
        w_dim=w_dim,
        img_resolution=img_resolution,
        img_channels=int(sd[last_torgb].shape[0]),
        mapping_layers=mapping_layers,
        channels=channels,
        architecture=architecture,
        mapping_features=hidden if mapping_layers > 1 and hidden != w_dim else None,
        use_noise="synthesis.b4.conv1.noise_const" in sd,
        resample_filter=taps,
    )


# ----------------------------------------------------------------------------
# rosinality -> NVlabs.


def is_rosinality_state_dict(sd: Any) -> bool:
    return (
        isinstance(sd, dict) and "style.1.weight" in sd and "input.input" in sd and "conv1.conv.weight" in sd
    )


def is_nvlabs_state_dict(sd: Any) -> bool:
    return isinstance(sd, dict) and "mapping.fc0.weight" in sd and "synthesis.b4.const" in sd


def rosinality_to_nvlabs(
    sd: dict[str, torch.Tensor], latent_avg: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Re-key a rosinality ``g_ema`` state_dict to NVlabs names (formats.md §2 gives the mapping).

    ``mapping.w_avg`` is ``latent_avg`` when given, else left out (the caller estimates it).
    """
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise DistillError(f"rosinality state_dict is missing {key}; expected " + EXPECTED)
        used.add(key)
        return sd[key]

    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in sd:
        n_mlp += 1
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = take(f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = take(f"style.{i + 1}.bias")
    num_torgbs = len({m.group(1) for k in sd if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
    img_resolution = 2 ** (num_torgbs + 2)
    kernel_key = next((k for k in sd if k.endswith("upsample.kernel") or k.endswith("blur.kernel")), None)
    kernel = sd[kernel_key] if kernel_key is not None else None
    resample = (kernel / kernel.sum()).float() if kernel is not None else None
    if kernel is not None:
        used.update(k for k in sd if k.endswith("upsample.kernel") or k.endswith("blur.kernel"))

    def conv_layer(src: str, dst: str, noise_index: int) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.activate.bias")
        out[f"{dst}.noise_strength"] = take(f"{src}.noise.weight").reshape([])
        out[f"{dst}.noise_const"] = take(f"noises.noise_{noise_index}")[0, 0]
        if resample is not None:
            out[f"{dst}.resample_filter"] = resample

    def torgb_layer(src: str, dst: str) -> None:
        out[f"{dst}.weight"] = take(f"{src}.conv.weight")[0]
        out[f"{dst}.affine.weight"] = take(f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = take(f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(-1)

    out["synthesis.b4.const"] = take("input.input")[0]
    conv_layer("conv1", "synthesis.b4.conv1", 0)
    torgb_layer("to_rgb1", "synthesis.b4.torgb")
    for j in range(num_torgbs):
        res = 2 ** (j + 3)
        conv_layer(f"convs.{2 * j}", f"synthesis.b{res}.conv0", 2 * j + 1)
        conv_layer(f"convs.{2 * j + 1}", f"synthesis.b{res}.conv1", 2 * j + 2)
        torgb_layer(f"to_rgbs.{j}", f"synthesis.b{res}.torgb")
    if resample is not None:
        for res in [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]:
            out[f"synthesis.b{res}.resample_filter"] = resample
    leftover = sorted(set(sd) - used)
    if leftover:
        raise DistillError(
            f"rosinality state_dict has keys this loader does not understand: {leftover[:6]}"
            f"{' ...' if len(leftover) > 6 else ''} (only the original StyleGAN2 generator is "
            "supported, not SWAGAN or conditional variants)"
        )
    if latent_avg is not None:
        out["mapping.w_avg"] = latent_avg.reshape(-1)
    return out


@torch.no_grad()
def estimate_w_avg(G: Generator, num: int = W_AVG_SAMPLES, seed: int = W_AVG_SEED) -> torch.Tensor:
    """Mean of ``mapping(z)`` over ``num`` seeded z (what rosinality's ``mean_latent`` computes)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([num, G.z_dim], generator=gen).to(G.w_avg.device)
    return G.mapping(z)[:, 0].mean(dim=0)


# ----------------------------------------------------------------------------
# Reading files.


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except DistillError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistillError(
            f"{path}: torch.load(weights_only=True) refused or failed ({first}); expected " + EXPECTED
        ) from e


def read_checkpoint(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``path`` -> (format name, NVlabs-keyed state_dict, config hints not visible in tensors)."""
    path = Path(path)
    if not path.is_file():
        raise DistillError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(2)
    if zipfile.is_zipfile(path):
        obj = _torch_load(path)
    elif head[:1] == b"\x80":
        with open(path, "rb") as f:
            obj = safe_pickle.safe_load(f, source=str(path))
        if isinstance(obj, int) and obj == safe_pickle.TORCH_LEGACY_MAGIC:
            obj = _torch_load(path)
        elif isinstance(obj, dict) and ("G_ema" in obj or "G" in obj):
            return _from_network_pickle(path, obj)
        elif isinstance(obj, (tuple, TFNetworkRecord)):
            return _from_tf_pickle(path, obj)
    else:
        raise DistillError(f"{path}: not a pickle or torch file; expected " + EXPECTED)
    try:
        return _from_loaded_object(path, obj)
    except DistillError as e:
        if str(e).startswith(f"{path}:"):
            raise
        raise DistillError(f"{path}: {e}") from e


def _from_network_pickle(path: Path, obj: dict) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    key = "G_ema" if "G_ema" in obj else "G"
    if key == "G":
        log.warning("%s: network pickle has no G_ema; using G (the non-averaged training weights)", path)
    record = obj[key]
    if not isinstance(record, safe_pickle.PersistentRecord):
        raise DistillError(f"{path}: {key} is not an NVlabs persistent network record; expected " + EXPECTED)
    try:
        sd = safe_pickle.module_state_dict(record)
    except DistillError as e:
        raise DistillError(f"{path}: {key}: {e}") from e
    kwargs = safe_pickle.plain(record.state.get("_init_kwargs") or {})
    hints: dict[str, Any] = {}
    if int(kwargs.get("c_dim", 0) or 0) > 0:
        raise DistillError(
            f"{path}: conditional generator (c_dim={kwargs['c_dim']}) is not supported; "
            "use an unconditional checkpoint"
        )
    mapping_kwargs = kwargs.get("mapping_kwargs") or {}
    synthesis_kwargs = kwargs.get("synthesis_kwargs") or {}
    if "conv_clamp" in synthesis_kwargs:
        hints["conv_clamp"] = synthesis_kwargs["conv_clamp"]
    for name in ("lr_multiplier", "w_avg_beta"):
        if name in mapping_kwargs:
            hints[name] = mapping_kwargs[name]
    return "nvlabs-pkl", sd, hints


def _from_tf_pickle(path: Path, obj: Any) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    if isinstance(obj, tuple) and len(obj) == 3 and all(isinstance(n, TFNetworkRecord) for n in obj):
        obj = obj[2]  # (G, D, Gs): Gs is the moving average used for inference
    if not isinstance(obj, TFNetworkRecord):
        raise DistillError(
            f"{path}: a pickled tuple that is not a TensorFlow (G, D, Gs) triple; expected " + EXPECTED
        )
    try:
        sd, hints = convert_tf_generator(obj)
    except KeyError as e:
        raise DistillError(f"{path}: TensorFlow StyleGAN2 pickle lacks variable {e}") from e
    except DistillError as e:
        raise DistillError(f"{path}: {e}") from e
    return "tensorflow-pkl", sd, hints


def _from_loaded_object(path: Path, obj: Any) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        metadata = {k: v for k, v in obj.items() if k not in ("format", "init_kwargs", "state_dict")}
        return (
            FORMAT,
            dict(obj["state_dict"]),
            {"init_kwargs": dict(obj["init_kwargs"]), "metadata": metadata},
        )
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and "state_dict" in obj:
        raise DistillError(
            f"{path}: checkpoint format {obj['format']!r} is not a StyleGAN2 generator; expected " + EXPECTED
        )
    if isinstance(obj, dict) and is_nvlabs_state_dict(obj.get("G_ema")):
        return "nvlabs-state-dict", dict(obj["G_ema"]), {}
    if isinstance(obj, dict) and "g_ema" in obj:
        if not is_rosinality_state_dict(obj["g_ema"]):
            raise DistillError(
                f"{path}: 'g_ema' is not a rosinality Generator state_dict; expected " + EXPECTED
            )
        latent_avg = obj.get("latent_avg")
        return "rosinality", rosinality_to_nvlabs(obj["g_ema"], latent_avg), {}
    if is_rosinality_state_dict(obj):
        return "rosinality", rosinality_to_nvlabs(obj), {}
    if is_nvlabs_state_dict(obj):
        return "nvlabs-state-dict", dict(obj), {}
    what = (
        f"a dict with keys {sorted(map(str, obj))[:6]}"
        if isinstance(obj, dict)
        else f"a {type(obj).__name__}"
    )
    raise DistillError(
        f"{path}: holds {what}, which is no known StyleGAN2 generator format; expected " + EXPECTED
    )


# ----------------------------------------------------------------------------
# Public API.


def build_generator(sd: dict[str, torch.Tensor], **kwargs: Any) -> Generator:
    """A Generator shaped for ``sd`` (NVlabs keys), with ``sd`` loaded strictly."""
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise DistillError("state_dict values must all be tensors")
    try:
        config = infer_config(sd)
        config.update(kwargs)
        G = Generator(**config)
    except (KeyError, IndexError, ValueError) as e:
        raise DistillError(
            f"cannot infer a StyleGAN2 generator from the tensors ({type(e).__name__}: {e})"
        ) from e
    missing_w_avg = "mapping.w_avg" not in sd
    sd = {k: v.float() for k, v in sd.items()}
    if missing_w_avg:
        sd["mapping.w_avg"] = G.mapping.w_avg
    try:
        result = G.load_state_dict(sd, strict=False)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:4])
        raise DistillError(f"tensor shapes do not fit the inferred generator: {detail}") from e
    if result.missing_keys or result.unexpected_keys:
        raise DistillError(
            f"state_dict does not fit the inferred generator: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}"
        )
    return G


def load_generator(path: str | Path, device: str | torch.device = "cpu", **overrides: Any) -> Generator:
    """Load a StyleGAN2 generator from any supported format, in eval mode, without gradients.

    ``overrides`` set what tensors cannot tell: ``conv_clamp``, ``lr_multiplier``, ``w_avg_beta``.
    The result has ``G.checkpoint_info`` = {path, format, w_avg_source, metadata} (metadata: the
    ``extra`` entries of a :func:`save_generator` file, else empty).
    """
    bad = sorted(set(overrides) - set(OVERRIDABLE))
    if bad:
        raise DistillError(
            f"load_generator: cannot override {bad}; only {list(OVERRIDABLE)} "
            "(everything else is inferred from the checkpoint's tensors)"
        )
    fmt, sd, hints = read_checkpoint(path)
    kwargs = {k: v for k, v in hints.items() if k in OVERRIDABLE}
    if fmt == FORMAT:
        kwargs = {k: v for k, v in hints["init_kwargs"].items() if k in OVERRIDABLE}
    kwargs.update(overrides)
    try:
        G = build_generator(sd, **kwargs)
    except DistillError as e:
        raise DistillError(f"{path}: {e}") from e
    G.eval()
    w_avg_source = "checkpoint"
    if "mapping.w_avg" not in sd:
        G.mapping.w_avg.copy_(estimate_w_avg(G))
        w_avg_source = f"estimated: mean of mapping(z) over {W_AVG_SAMPLES} z (seed {W_AVG_SEED})"
        log.info("%s: no latent_avg in the checkpoint; w_avg %s", path, w_avg_source)
    G.checkpoint_info = {
        "path": str(path),
        "format": fmt,
        "w_avg_source": w_avg_source,
        "metadata": hints.get("metadata", {}),
    }
    try:
        G = G.to(device)
    except (RuntimeError, AssertionError) as e:
        raise DistillError(f"cannot move the generator to device {device!r}: {e}") from e
    G.eval().requires_grad_(False)
    return G


def save_generator(G: Generator, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``{"format": "stylegan2-distill/1", "init_kwargs", "state_dict", **extra}`` atomically."""
    extra = dict(extra or {})
    clash = sorted({"format", "init_kwargs", "state_dict"} & set(extra))
    if clash:
        raise ValueError(f"extra may not override {clash}")
    state_dict = {k: v.detach().cpu().contiguous() for k, v in G.state_dict().items()}
    return atomic_torch_save(
        path, {"format": FORMAT, "init_kwargs": dict(G.init_kwargs), "state_dict": state_dict, **extra}
    )
