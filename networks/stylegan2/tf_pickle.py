"""Original TensorFlow StyleGAN2 pickles (``stylegan2-ffhq-config-f.pkl``) -> NVlabs PyTorch tensors.

These pickles hold ``(G, D, Gs)`` as ``dnnlib.tflib.network.Network`` objects whose state is a dict
(``version``, ``static_kwargs``, ``components``, ``variables`` = [(name, ndarray)]). The restricted
unpickler turns each into a :class:`TFNetworkRecord`; this module re-keys ``Gs``'s variables with the
rules of NVlabs stylegan2-ada-pytorch ``legacy.py`` (TF weights are [kh, kw, in, out]; the TF
up-convolution and skip weights are stored spatially flipped; TF ``mod_bias`` excludes the +1).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from core.errors import DistillError


class TFNetworkRecord(dict):
    """Stand-in for ``dnnlib.tflib.network.Network``: keeps the pickled state dict, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise DistillError("TensorFlow network record has no dict state")
        self.update(state)


def collect_variables(net: TFNetworkRecord) -> dict[str, np.ndarray]:
    """All variables of ``net`` and its components, named ``component/.../variable``."""
    out: dict[str, np.ndarray] = {}

    def recurse(prefix: str, node: Any) -> None:
        if not isinstance(node, TFNetworkRecord):
            raise DistillError(f"TensorFlow pickle: component {prefix or '/'} is not a network record")
        for name, value in node.get("variables") or []:
            out[prefix + name] = np.asarray(value)
        for name, comp in (node.get("components") or {}).items():
            recurse(prefix + name + "/", comp)

    recurse("", net)
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def convert_tf_generator(net: TFNetworkRecord) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """NVlabs-keyed state_dict and config hints (lr_multiplier, conv_clamp) from a TF ``Gs`` record."""
    if int(net.get("version", 0)) < 4:
        raise DistillError("TensorFlow pickle version < 4 (StyleGAN1 or older) is not supported")
    kwargs = dict(net.get("static_kwargs") or {})
    if int(kwargs.get("label_size") or 0) > 0:
        raise DistillError("conditional generators (label_size > 0) are not supported")
    tf = collect_variables(net)
    if any(re.fullmatch(r"synthesis/ToRGB_lod\d+/.*", k) for k in tf):
        raise DistillError(
            "TensorFlow 'orig' architecture (ToRGB_lod*) is not supported; only 'skip'/'resnet'"
        )
    if "synthesis/4x4/Const/const" not in tf:
        raise DistillError("TensorFlow pickle has no synthesis/4x4/Const/const: not a StyleGAN2 generator")

    sd: dict[str, torch.Tensor] = {}
    i = 0
    while f"mapping/Dense{i}/weight" in tf:
        sd[f"mapping.fc{i}.weight"] = _t(tf[f"mapping/Dense{i}/weight"].T)
        sd[f"mapping.fc{i}.bias"] = _t(tf[f"mapping/Dense{i}/bias"])
        i += 1
    if "dlatent_avg" in tf:
        sd["mapping.w_avg"] = _t(tf["dlatent_avg"])
    sd["synthesis.b4.const"] = _t(tf["synthesis/4x4/Const/const"][0])

    def layer(dst: str, src: str, noise_index: int, flip: bool) -> None:
        w = tf[f"{src}/weight"]
        w = w[::-1, ::-1] if flip else w
        sd[f"{dst}.weight"] = _t(w.transpose(3, 2, 0, 1))
        sd[f"{dst}.bias"] = _t(tf[f"{src}/bias"])
        sd[f"{dst}.affine.weight"] = _t(tf[f"{src}/mod_weight"].T)
        sd[f"{dst}.affine.bias"] = _t(tf[f"{src}/mod_bias"] + 1)
        if f"{src}/noise_strength" in tf:
            sd[f"{dst}.noise_strength"] = _t(tf[f"{src}/noise_strength"]).reshape([])
            sd[f"{dst}.noise_const"] = _t(tf[f"synthesis/noise{noise_index}"][0, 0])

    def torgb(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = _t(tf[f"{src}/weight"].transpose(3, 2, 0, 1))
        sd[f"{dst}.bias"] = _t(tf[f"{src}/bias"])
        sd[f"{dst}.affine.weight"] = _t(tf[f"{src}/mod_weight"].T)
        sd[f"{dst}.affine.bias"] = _t(tf[f"{src}/mod_bias"] + 1)

    layer("synthesis.b4.conv1", "synthesis/4x4/Conv", 0, flip=False)
    if "synthesis/4x4/ToRGB/weight" in tf:
        torgb("synthesis.b4.torgb", "synthesis/4x4/ToRGB")
    k = 3
    while f"synthesis/{2**k}x{2**k}/Conv0_up/weight" in tf:
        r = 2**k
        layer(f"synthesis.b{r}.conv0", f"synthesis/{r}x{r}/Conv0_up", 2 * k - 5, flip=True)
        layer(f"synthesis.b{r}.conv1", f"synthesis/{r}x{r}/Conv1", 2 * k - 4, flip=False)
        if f"synthesis/{r}x{r}/ToRGB/weight" in tf:
            torgb(f"synthesis.b{r}.torgb", f"synthesis/{r}x{r}/ToRGB")
        if f"synthesis/{r}x{r}/Skip/weight" in tf:
            sd[f"synthesis.b{r}.skip.weight"] = _t(
                tf[f"synthesis/{r}x{r}/Skip/weight"][::-1, ::-1].transpose(3, 2, 0, 1)
            )
        k += 1
    taps = kwargs.get("resample_kernel") or [1, 3, 3, 1]
    f = torch.outer(torch.tensor(taps, dtype=torch.float32), torch.tensor(taps, dtype=torch.float32))
    f = f / f.sum()
    for name in [
        n[: -len(".weight")]
        for n in list(sd)
        if n.endswith((".conv0.weight", ".conv1.weight", ".skip.weight"))
    ]:
        sd[f"{name}.resample_filter"] = f
        sd[f"{name.rsplit('.', 1)[0]}.resample_filter"] = f
    hints: dict[str, Any] = {"lr_multiplier": float(kwargs.get("mapping_lrmul") or 0.01)}
    if kwargs.get("conv_clamp") is not None:
        hints["conv_clamp"] = kwargs["conv_clamp"]
    return sd, hints
