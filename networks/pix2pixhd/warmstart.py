"""Start a generator from another generator's weights, across the ``norm`` and ``upsample`` options.

The weights come from a distill checkpoint, an NVIDIA ``latest_net_G.pth`` or the ``model.onnx`` of a
distill export (its initializers carry the state_dict keys), so a student can be trained on from a shipped
model-zoo entry when its training run is gone. Two conversions make an NVIDIA-style generator the start
of a cleaner one:

- **instance norm -> none**: each InstanceNorm2d divides by statistics of the picture it sees. They are
  replaced by their mean over calibration inputs and folded into the conv before the norm
  (``W / sigma``, ``(b - mu) / sigma``), one norm at a time, each measured on the network folded so far, so
  the errors do not add up. The folded network is close to the original on typical inputs; training
  on from it removes the rest.
- **transpose -> resize**: the 3x3 conv on the nearest-upsampled input that is closest, in least squares
  over the four output phases, to the 3x3 stride-2 transposed conv.

A third makes it the start of a wider one (``--ngf`` above the source's, global generators):

- **narrow -> wide** (Net2Net's function-preserving widening, with zeros instead of copies): every old
  weight keeps its place, the new channels get fresh initial weights from the old ones, and every weight
  from a new channel into an old one is zero. The wide network computes exactly what the narrow one did,
  and training gives the new channels their use (their outgoing weights get gradients from the start).

The same widening starts a student of K edits from a one-edit strength dial (``--condition modulation``):
the dial's edit becomes the first of the K (put its direction first in ``distill pairs``) and the FiLM MLP's
inputs for the others start at zero, so with only the first edit active, at a positive strength, the student
begins as the dial (the K-edit gate is ``|s|_1``, so a negative strength starts as the opposite of its edit).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from core.errors import DistillError
from networks.pix2pixhd.checkpoints import _read, _split, load_state_dict_checked
from networks.pix2pixhd.conditional import ConditionalGenerator
from networks.pix2pixhd.config import Pix2PixHDConfig
from networks.pix2pixhd.layers import ResizeConv2d
from networks.pix2pixhd.networks import build_generator


def read_generator_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str, str]:
    """(state_dict, norm, upsample) of a generator file: a distill checkpoint or NVIDIA .pth, or a distill
    export's ONNX graph (norm and upsampling read from its operators)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        sd, stored = _split(_read(path), path)
        return sd, (stored.norm if stored else "instance"), (stored.upsample if stored else "transpose")
    import onnx
    from onnx import numpy_helper

    if not path.is_file():
        raise DistillError(f"{path}: no such file; expected the model.onnx of a model-zoo entry")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise DistillError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    sd = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in model.graph.initializer
        if i.name.endswith((".weight", ".bias"))
    }
    if not sd:
        raise DistillError(
            f"{path}: no initializers named like generator weights (model.N.weight); export the "
            "student with `distill export` or pass its training checkpoint"
        )
    ops = {n.op_type for n in model.graph.node}
    return (
        sd,
        ("instance" if "InstanceNormalization" in ops else "none"),
        (
            "resize" if "Resize" in ops and "ConvTranspose" not in ops else "transpose"
        ),  # no upsampling: either
    )


def resize_from_transpose(weight: torch.Tensor) -> torch.Tensor:
    """[in, out, 3, 3] weights of a (k3, s2, p1, op1) transposed conv -> [out, in, 3, 3] of the closest
    :class:`ResizeConv2d`.

    Per output phase (row parity a, column parity b) and input offset, both layers are sums of their
    taps; solving those equations in least squares gives the resize conv's taps from the transposed
    conv's, for every channel pair at once."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise DistillError(
            f"resize_from_transpose: expected [in, out, 3, 3] weights, got {list(weight.shape)}"
        )
    # 1-D: transposed output 2m+a takes x[m+d] with tap t_k; the resize conv takes x[m+d] with the sum of w_k.
    t_taps = {0: {0: [1]}, 1: {0: [2], 1: [0]}}  # phase -> offset -> transposed taps
    w_taps = {0: {-1: [0], 0: [1, 2]}, 1: {0: [0, 1], 1: [2]}}  # phase -> offset -> resize taps
    rows_m, rows_t = [], []
    for a in (0, 1):
        for b in (0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    m = np.zeros(9)
                    for ky in w_taps[a].get(dy, []):
                        for kx in w_taps[b].get(dx, []):
                            m[ky * 3 + kx] = 1
                    t = np.zeros(9)
                    for ky in t_taps[a].get(dy, []):
                        for kx in t_taps[b].get(dx, []):
                            t[ky * 3 + kx] = 1
                    rows_m.append(m)
                    rows_t.append(t)
    solve = np.linalg.pinv(np.asarray(rows_m)) @ np.asarray(rows_t)  # [9 resize taps, 9 transposed taps]
    w = weight.detach().double().reshape(*weight.shape[:2], 9) @ torch.from_numpy(solve.T)
    return w.reshape(weight.shape).transpose(0, 1).contiguous().to(weight.dtype)


def _norms(net: nn.Module) -> Iterator[tuple[nn.Sequential, int]]:
    """(Sequential, index) of every InstanceNorm2d, in the order of registration (= forward order here)."""
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            for i, layer in enumerate(module):
                if isinstance(layer, nn.InstanceNorm2d):
                    yield module, i


def _fold(conv: nn.Module, mu: torch.Tensor, sigma: torch.Tensor) -> None:
    """conv(x) -> (conv(x) - mu) / sigma, per output channel, in place."""
    with torch.no_grad():
        if isinstance(conv, nn.ConvTranspose2d):
            conv.weight.div_(sigma.view(1, -1, 1, 1))
        elif isinstance(conv, nn.Conv2d):
            conv.weight.div_(sigma.view(-1, 1, 1, 1))
        else:
            raise DistillError(f"fold: an instance norm follows a {type(conv).__name__}, not a conv")
        if conv.bias is None:
            raise DistillError("fold: the conv before an instance norm has no bias to take its mean")
        conv.bias.sub_(mu).div_(sigma)


@torch.no_grad()
def fold_instance_norms(net: nn.Module, inputs: torch.Tensor, strength: torch.Tensor | None = None) -> int:
    """Replace every InstanceNorm2d of ``net`` by an Identity, folding the mean of its statistics over ``inputs``
    into the conv before it (see the module docstring); returns how many were folded."""
    folded = 0
    while True:
        found = next(_norms(net), None)
        if found is None:
            return folded
        seq, i = found
        norm = seq[i]
        assert isinstance(norm, nn.InstanceNorm2d)
        stats: dict[str, torch.Tensor] = {}

        handle = norm.register_forward_pre_hook(functools.partial(_grab, stats))
        try:
            net(inputs) if strength is None else net(inputs, strength)
        except _Captured:
            pass
        finally:
            handle.remove()
        sigma = (stats["var"] + norm.eps).sqrt()
        _fold(seq[i - 1], stats["mu"].float(), sigma.float())
        seq[i] = nn.Identity()
        folded += 1


class _Captured(Exception):
    """Stops the calibration forward pass once the norm being folded has seen its input."""


def _grab(stats: dict[str, torch.Tensor], _module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """Forward pre-hook: the mean over the batch of the per-picture channel means and variances, then stop."""
    x = args[0].double()
    stats["mu"] = x.mean((2, 3)).mean(0)
    stats["var"] = x.var((2, 3), unbiased=False).mean(0)
    raise _Captured


def warm_start(
    G: nn.Module, path: str | os.PathLike, inputs: torch.Tensor, strength: torch.Tensor | None = None
) -> str:
    """Load ``path``'s generator weights into ``G`` (built from its own ``G.config``), converting NVIDIA's instance
    norm and transposed convs when ``G`` uses ``norm="none"`` / ``upsample="resize"``; ``inputs`` [N,3,H,W] in [-1,1]
    (and ``strength`` [N] for a conditional generator) calibrate the folding. Returns a one-line description."""
    cfg = cast(Pix2PixHDConfig, G.config)
    sd, norm, upsample = read_generator_weights(path)
    if norm == "none" and cfg.norm == "instance":
        raise DistillError(
            f"--init {path}: its generator has no instance norm; a generator with norm=instance cannot "
            "start from it (train with --norm none)"
        )
    if upsample == "resize" and cfg.upsample == "transpose":
        raise DistillError(
            f"--init {path}: its generator upsamples by resize-convolution; train with --upsample resize"
        )
    source_ngf = _ngf(sd, path)
    source_edits = _edits(sd, cfg, path)
    if source_ngf != cfg.ngf and (cfg.netG != "global" or source_ngf > cfg.ngf):
        raise DistillError(
            f"--init {path}: its generator has ngf {source_ngf}; a warm start can widen a global generator "
            f"(--ngf above {source_ngf}) but not narrow one or widen a {cfg.netG} one (--ngf {cfg.ngf})"
        )
    source = build_generator(cfg.replace(norm=norm, ngf=source_ngf, n_edits=source_edits), init=False)
    if upsample != cfg.upsample:
        names = [n for n, m in source.named_modules() if isinstance(m, ResizeConv2d)]
        sd = dict(sd)
        for n in names:
            if f"{n}.weight" in sd:
                sd[f"{n}.weight"] = resize_from_transpose(sd[f"{n}.weight"])
    load_state_dict_checked(source, sd, str(path))
    source = source.to(inputs.device).eval()
    done = [f"weights of {path}"]
    if upsample != cfg.upsample:
        done.append(f"{len(names)} transposed convs turned into resize-convs")
    if norm != cfg.norm:
        if strength is not None and source_edits != cfg.n_edits:
            strength = strength.reshape(len(inputs), -1)[:, 0]  # the dial's edit is the first
        done.append(
            f"{fold_instance_norms(source, inputs, strength)} instance norms folded over {len(inputs)} inputs"
        )
    if source_ngf != cfg.ngf or source_edits != cfg.n_edits:
        G.load_state_dict(widen_state_dict(G, source.state_dict()))
        if source_ngf != cfg.ngf:
            done.append(f"widened from ngf {source_ngf} to {cfg.ngf}")
        if source_edits != cfg.n_edits:
            done.append(f"its edit made the first of {cfg.n_edits}, the others' modulation inputs at zero")
    else:
        G.load_state_dict(source.state_dict())
    return "warm start: " + "; ".join(done)


def _edits(sd: dict[str, torch.Tensor], cfg: Pix2PixHDConfig, path: str | os.PathLike) -> int:
    """The source's K (the inputs of its FiLM MLP; 1 without one): K itself, or 1 to start a K-edit student from
    a one-edit modulated dial."""
    film = sd.get("film.0.weight")
    edits = int(film.shape[1]) if film is not None and film.dim() == 2 else cfg.n_edits
    if edits != cfg.n_edits and not (edits == 1 and cfg.condition == "modulation" and film is not None):
        raise DistillError(
            f"--init {path}: its generator takes {edits} edit strength(s), the dataset {cfg.n_edits}; a warm start "
            "can only make a one-edit modulated dial (--condition modulation) the first of several edits"
        )
    return edits


def _ngf(sd: dict[str, torch.Tensor], path: str | os.PathLike) -> int:
    """The generator's ngf: the output channels of its first conv (``model.1``)."""
    first = sd.get("model.1.weight")
    if first is None or first.dim() != 4:
        raise DistillError(f"--init {path}: no first conv 'model.1.weight'; not a Pix2PixHD generator")
    return int(first.shape[0])


@torch.no_grad()
def widen_state_dict(wide: nn.Module, narrow: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state_dict for ``wide`` (its current weights: the fresh init of the new channels) that computes what
    the ``narrow`` state_dict of the same layout computes (see the module docstring).

    Per weight, the old block is copied into the leading corner and the block reading new input channels
    into old output channels is zeroed (conv ``[out, in, ...]``, transposed conv ``[in, out, ...]``). The FiLM
    layer of a modulated generator, ``[points * 2 * C, hidden]``, is widened per (point, scale|shift) block,
    its new channels at zero (no modulation)."""
    modules = dict(wide.named_modules())
    film = wide.film if isinstance(wide, ConditionalGenerator) and wide.condition == "modulation" else None
    out = {}
    for key, fresh in wide.state_dict().items():
        old = narrow[key]
        if old.shape == fresh.shape:
            out[key] = old.clone()
            continue
        if old.dim() != fresh.dim() or any(o > f for o, f in zip(old.shape, fresh.shape, strict=True)):
            raise DistillError(f"widen: {key} {list(old.shape)} does not fit into {list(fresh.shape)}")
        module_name, _, param = key.rpartition(".")
        module = modules[module_name]
        if film is not None and module is film[-1]:
            assert isinstance(wide, ConditionalGenerator)
            points = wide.film_points
            c_old, c_new = old.shape[0] // (2 * points), fresh.shape[0] // (2 * points)
            new = torch.zeros(points, 2, c_new, *fresh.shape[1:], dtype=fresh.dtype)
            new[:, :, :c_old] = old.reshape(points, 2, c_old, *old.shape[1:])
            out[key] = new.reshape(fresh.shape)
            continue
        new = fresh.clone()
        new[tuple(slice(0, n) for n in old.shape)] = old
        if param == "weight" and isinstance(module, nn.ConvTranspose2d):
            new[old.shape[0] :, : old.shape[1]] = 0
        elif param == "weight" and isinstance(module, (nn.Conv2d, nn.Linear)):
            new[: old.shape[0], old.shape[1] :] = 0
        out[key] = new
    return out
