"""Checkpoint formats on configurations other than the fixtures': inference from tensors, the
rosinality re-keying, our own format's round trip, and clear errors for files that fit no format."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from core.errors import DistillError
from networks.stylegan2 import Generator, infer_config, load_generator, save_generator

CONFIG = dict(z_dim=24, w_dim=40, img_resolution=16, mapping_layers=3, channels={4: 20, 8: 12, 16: 6})


def random_generator(seed: int = 0, **overrides) -> Generator:
    """A generator with every parameter redrawn (non-zero biases and noise strengths), in eval mode."""
    torch.manual_seed(seed)
    G = Generator(**{**CONFIG, **overrides})
    with torch.no_grad():
        for name, p in G.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if name.endswith(("bias", "noise_strength")) else 1.0))
            if name.endswith("affine.bias"):
                p.add_(1.0)
        G.mapping.w_avg.normal_()
    return G.eval().requires_grad_(False)


def outputs(G: Generator, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn([3, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G.mapping(z, truncation_psi=0.6, truncation_cutoff=2), G(
            z, truncation_psi=0.6, noise_mode="const"
        )


def assert_same_generator(actual: Generator, expected: Generator) -> None:
    for a, b in zip(outputs(actual), outputs(expected), strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5


def nvlabs_to_rosinality(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Re-key an NVlabs state_dict the way formats.md §2 describes (the inverse of the loader's map)."""
    out: dict[str, torch.Tensor] = {}
    kernel = torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64 * 4
    i = 0
    while f"mapping.fc{i}.weight" in sd:
        out[f"style.{i + 1}.weight"], out[f"style.{i + 1}.bias"] = (
            sd[f"mapping.fc{i}.weight"],
            sd[f"mapping.fc{i}.bias"],
        )
        i += 1
    out["input.input"] = sd["synthesis.b4.const"][None]

    def conv(src: str, dst: str, noise: int, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.noise.weight"] = sd[f"{src}.noise_strength"].reshape(1)
        out[f"{dst}.activate.bias"] = sd[f"{src}.bias"]
        out[f"noises.noise_{noise}"] = sd[f"{src}.noise_const"][None, None]
        if up:
            out[f"{dst}.conv.blur.kernel"] = kernel

    def torgb(src: str, dst: str, up: bool) -> None:
        out[f"{dst}.conv.weight"] = sd[f"{src}.weight"][None]
        out[f"{dst}.conv.modulation.weight"] = sd[f"{src}.affine.weight"]
        out[f"{dst}.conv.modulation.bias"] = sd[f"{src}.affine.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = kernel

    conv("synthesis.b4.conv1", "conv1", 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", up=False)
    k = 3
    while f"synthesis.b{2**k}.conv0.weight" in sd:
        conv(f"synthesis.b{2**k}.conv0", f"convs.{2 * k - 6}", 2 * k - 5, up=True)
        conv(f"synthesis.b{2**k}.conv1", f"convs.{2 * k - 5}", 2 * k - 4, up=False)
        torgb(f"synthesis.b{2**k}.torgb", f"to_rgbs.{k - 3}", up=True)
        k += 1
    return out


def test_own_format_round_trip(tmp_path):
    G = random_generator(conv_clamp=64.0)
    path = save_generator(G, tmp_path / "g.pt", extra={"note": "hello", "step": 7})
    H = load_generator(path)
    assert H.init_kwargs == G.init_kwargs
    assert H.checkpoint_info["format"] == "stylegan2-distill/1"
    assert H.checkpoint_info["metadata"] == {"note": "hello", "step": 7}
    assert all(
        torch.equal(a, b) for a, b in zip(H.state_dict().values(), G.state_dict().values(), strict=True)
    )
    assert_same_generator(H, G)
    with pytest.raises(ValueError):
        save_generator(G, tmp_path / "bad.pt", extra={"state_dict": {}})


@pytest.mark.parametrize(
    "overrides",
    [
        dict(architecture="skip"),
        dict(architecture="orig"),
        dict(architecture="resnet"),
        dict(img_resolution=32, channels={4: 16, 8: 16, 16: 12, 32: 8}, mapping_layers=1),
        dict(mapping_features=56),
        dict(img_resolution=4, channels={4: 8}, img_channels=1),
    ],
)
def test_nvlabs_state_dict_any_config(tmp_path, overrides):
    G = random_generator(**overrides)
    torch.save(G.state_dict(), tmp_path / "sd.pt")
    H = load_generator(tmp_path / "sd.pt")
    assert H.checkpoint_info["format"] == "nvlabs-state-dict"
    assert H.init_kwargs == G.init_kwargs
    assert H.num_ws == 2 * int(math.log2(G.img_resolution)) - 2
    assert_same_generator(H, G)


def test_fused_and_unfused_paths_agree():
    G = random_generator(architecture="resnet")
    ws = torch.randn([2, G.num_ws, G.w_dim])
    with torch.no_grad():
        diff = (G.synthesis(ws, fused_modconv=True) - G.synthesis(ws, fused_modconv=False)).abs().max()
    assert diff < 1e-5


def test_rosinality_other_config_matches_nvlabs(tmp_path):
    G = random_generator(img_resolution=32, channels={4: 16, 8: 12, 16: 10, 32: 8}, mapping_layers=5)
    ros = nvlabs_to_rosinality(G.state_dict())
    torch.save({"g_ema": ros, "latent_avg": G.w_avg.clone()}, tmp_path / "converted.pt")
    assert_same_generator(load_generator(tmp_path / "converted.pt"), G)
    # train.py layout: g, d, optimizers and an argparse.Namespace beside g_ema (no latent_avg).
    torch.save(
        {
            "g": ros,
            "d": {"convs.0.0.weight": torch.zeros(1)},
            "g_ema": ros,
            "g_optim": {"state": {}},
            "d_optim": {"state": {}},
            "args": argparse.Namespace(size=32, latent=G.w_dim),
        },
        tmp_path / "train.pt",
    )
    H = load_generator(tmp_path / "train.pt")
    assert H.checkpoint_info["w_avg_source"].startswith("estimated")
    ws = torch.randn([2, G.num_ws, G.w_dim])
    with torch.no_grad():
        assert (H.synthesis(ws) - G.synthesis(ws)).abs().max() < 1e-5


def test_legacy_torch_save_format_and_g_ema_key(tmp_path):
    G = random_generator()
    torch.save(G.state_dict(), tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    assert_same_generator(load_generator(tmp_path / "old.pth"), G)
    torch.save({"G_ema": G.state_dict(), "step": 3}, tmp_path / "wrapped.pt")
    assert_same_generator(load_generator(tmp_path / "wrapped.pt"), G)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_cuda_request_without_cuda_is_a_clear_error(tmp_path):
    torch.save(random_generator().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(DistillError, match="device"):
        load_generator(tmp_path / "sd.pt", device="cuda")


def test_overrides_for_what_tensors_cannot_tell(tmp_path):
    G = random_generator()
    torch.save(G.state_dict(), tmp_path / "sd.pt")
    clamped = load_generator(tmp_path / "sd.pt", conv_clamp=0.01)
    assert clamped.init_kwargs["conv_clamp"] == 0.01
    img = outputs(clamped)[1]
    assert img.abs().max() <= 0.01 * len(clamped.synthesis.block_resolutions) + 1e-6
    assert load_generator(tmp_path / "sd.pt", lr_multiplier=1.0).init_kwargs["lr_multiplier"] == 1.0
    with pytest.raises(DistillError, match="cannot override"):
        load_generator(tmp_path / "sd.pt", img_resolution=64)


def test_training_mode_tracks_w_avg():
    G = random_generator().train()
    before = G.w_avg.clone()
    G.mapping(torch.randn([8, G.z_dim]))
    assert not torch.equal(before, G.w_avg)
    G.eval()
    after = G.w_avg.clone()
    G.mapping(torch.randn([8, G.z_dim]))
    assert torch.equal(after, G.w_avg)


class Opaque(torch.nn.Module):
    pass


@pytest.mark.parametrize(
    "kind",
    [
        "missing",
        "random_dict",
        "text",
        "png",
        "module",
        "truncated",
        "tensor",
        "conditional",
        "unknown_rosinality_keys",
        "stylegan3",
        "other_format",
        "missing_block_layer",
        "wrong_shape",
    ],
)
def test_files_that_fit_no_format(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    sd = random_generator().state_dict()
    if kind == "random_dict":
        torch.save({"weights": torch.zeros(3), "epoch": 4}, path)
    elif kind == "text":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "png":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    elif kind == "module":
        torch.save(Opaque(), path)
    elif kind == "truncated":
        torch.save(sd, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "tensor":
        torch.save(torch.zeros(4), path)
    elif kind == "conditional":
        torch.save({**sd, "mapping.embed.weight": torch.zeros(CONFIG["w_dim"], 10)}, path)
    elif kind == "unknown_rosinality_keys":
        torch.save({**nvlabs_to_rosinality(sd), "to_rgbs.0.iwt.ll": torch.zeros(2)}, path)
    elif kind == "missing_block_layer":
        torch.save({k: v for k, v in sd.items() if not k.startswith("synthesis.b8.conv1.")}, path)
    elif kind == "wrong_shape":
        torch.save({**sd, "synthesis.b8.conv0.weight": torch.zeros(12, 20, 5, 5)}, path)
    elif kind == "stylegan3":
        torch.save({**sd, "synthesis.input.weight": torch.zeros(4, 4)}, path)
    elif kind == "other_format":
        torch.save({"format": "pix2pixhd-distill/1", "state_dict": {}, "config": {}}, path)
    with pytest.raises(DistillError) as err:
        load_generator(path)
    message = str(err.value)
    assert str(path) in message
    expected = {
        "missing": "no such",
        "conditional": "conditional",
        "unknown_rosinality_keys": "does not understand",
        "stylegan3": "StyleGAN3",
        "missing_block_layer": "cannot infer",
        "wrong_shape": "do not fit",
        "other_format": "pix2pixhd-distill/1",
    }.get(kind, "expected an NVlabs network pickle")
    assert expected in message


def test_infer_config_rejects_broken_block_chain():
    sd = {k: v for k, v in random_generator().state_dict().items() if not k.startswith("synthesis.b8.")}
    with pytest.raises(DistillError, match="power-of-two chain"):
        infer_config(sd)
