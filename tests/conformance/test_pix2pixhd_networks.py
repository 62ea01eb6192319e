"""Pix2PixHD networks: config inference round trips, shapes, NVIDIA key layout, loader errors, ONNX export."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.errors import DistillError
from networks.pix2pixhd import (
    Pix2PixHDConfig,
    build_discriminator,
    build_generator,
    get_preset,
    infer_config,
    load_generator,
    networks,
    save_generator,
)

STRUCTURE = ["input_nc", "output_nc", "ngf", "netG", "n_downsample_global", "n_blocks_global"]


def _random_tiny_config(rng: random.Random) -> Pix2PixHDConfig:
    return Pix2PixHDConfig(
        input_nc=rng.choice([1, 3, 4]),
        output_nc=rng.choice([1, 3]),
        ngf=rng.choice([2, 4, 6]),
        netG=rng.choice(["global", "local"]),
        n_downsample_global=rng.randint(0, 2),
        n_blocks_global=rng.randint(0, 3),
        n_local_enhancers=rng.randint(1, 2),
        n_blocks_local=rng.randint(0, 2),
    )


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Spread the weights so the outputs differ clearly between architectures (tanh not saturated)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 / max(1, p[0].numel()) ** 0.5)


@pytest.mark.parametrize("seed", range(8))
def test_infer_config_round_trip_flat_state_dict(tmp_path, seed):
    cfg = _random_tiny_config(random.Random(seed))
    G = build_generator(cfg).eval()
    _randomize(G, seed)
    path = tmp_path / "latest_net_G.pth"
    torch.save(G.state_dict(), path)
    inferred = infer_config(torch.load(path, weights_only=True))
    fields = STRUCTURE + (["n_local_enhancers", "n_blocks_local"] if cfg.netG == "local" else [])
    assert {f: getattr(inferred, f) for f in fields} == {f: getattr(cfg, f) for f in fields}
    loaded = load_generator(path)
    H, W = loaded.min_size, loaded.min_size + cfg.stride  # non-square
    x = torch.rand(2, cfg.input_nc, H, W) * 2 - 1
    with torch.no_grad():
        expected, got = G(x), loaded(x)
    assert got.shape == (2, cfg.output_nc, H, W)
    assert torch.equal(expected, got)


def test_own_checkpoint_round_trip_keeps_training_fields(tmp_path):
    cfg = get_preset("tiny", netG="local", n_blocks_local=2, lr=1e-3, gan_mode="vanilla")
    G = build_generator(cfg).eval()
    path = save_generator(G, tmp_path / "latest.pt", optimizer={"step": 3})
    loaded = load_generator(path)
    assert loaded.config == cfg
    assert not loaded.training
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        assert torch.equal(G(x), loaded(x))
    assert load_generator(path, lr=5e-4).config.lr == 5e-4


def test_structural_override_conflict_refused(tmp_path):
    G = build_generator(get_preset("tiny"))
    torch.save(G.state_dict(), tmp_path / "g.pth")
    with pytest.raises(DistillError, match="ngf=16 was requested but the checkpoint's generator has ngf=4"):
        load_generator(tmp_path / "g.pth", ngf=16)
    with pytest.raises(DistillError, match="unknown override"):
        load_generator(tmp_path / "g.pth", colour="blue")


def test_wrong_shape_checkpoint_refused(tmp_path):
    cfg = get_preset("tiny")
    sd = build_generator(cfg).state_dict()
    sd["model.4.weight"] = torch.zeros(8, 5, 3, 3)  # downsampling conv with a wrong input width
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(
        DistillError,
        match=r"bad\.pth: weights do not fit.*model\.4\.weight: \[8, 5, 3, 3\] vs expected \[8, 4, 3, 3\]",
    ):
        load_generator(tmp_path / "bad.pth")


def test_stored_config_contradicting_weights_refused(tmp_path):
    cfg = get_preset("tiny")
    G = build_generator(cfg)
    torch.save(
        {
            "format": "pix2pixhd-distill/1",
            "config": dataclasses.asdict(cfg.replace(n_blocks_global=3)),
            "G": G.state_dict(),
        },
        tmp_path / "c.pt",
    )
    with pytest.raises(DistillError, match="stored config says n_blocks_global=3 but the weights have 1"):
        load_generator(tmp_path / "c.pt")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        (b"not a checkpoint", "cannot be read as a torch checkpoint"),
        (
            {"format": "pix2pixhd-distill/9", "config": {}, "G": {}},
            "format 'pix2pixhd-distill/9' is not supported",
        ),
        ({"epoch": 3}, "expected a pix2pixHD generator state_dict"),
        ({"conv.weight": torch.zeros(3)}, "missing 'model.1.weight'"),
        ({"scale0_layer0.0.weight": torch.zeros(3)}, "discriminator state_dict.*pass the generator's file"),
    ],
)
def test_bad_files_refused(tmp_path, content, message):
    path = tmp_path / "G.pth"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DistillError, match=message):
        load_generator(path)


@pytest.mark.parametrize("netG", ["global", "local"])
def test_input_shape_checked(netG, monkeypatch):
    cfg = get_preset("tiny", netG=netG)
    G = build_generator(cfg)
    with pytest.raises(DistillError, match=f"divisible by the network stride {cfg.stride}"):
        G(torch.zeros(1, 3, cfg.stride * 2, cfg.stride * 2 + 2))
    with pytest.raises(DistillError, match=r"expected input \[N, 3, H, W\]"):
        G(torch.zeros(1, 1, 32, 32))
    small = torch.zeros(1, 3, G.min_size - cfg.stride, G.min_size)
    with pytest.raises(DistillError, match=f"too small; H and W must be at least {G.min_size}"):
        G(small)
    # The bound is tight: without the check, torch's reflection padding fails below it.
    monkeypatch.setattr(networks, "check_input", lambda *args: None)
    with pytest.raises(RuntimeError, match="[Pp]adding"):
        G(small)
    assert G(torch.zeros(1, 3, G.min_size, G.min_size)).shape == (1, 3, G.min_size, G.min_size)


def test_stride_and_presets():
    assert Pix2PixHDConfig().stride == 16
    assert Pix2PixHDConfig(netG="local").stride == 32
    for netG in ("global", "local"):
        cfg = get_preset("tiny", netG=netG)
        assert build_generator(cfg).min_size == cfg.min_size
    assert get_preset("global") == Pix2PixHDConfig()
    assert get_preset("nvidia").netG == "local"
    assert get_preset("slim", ngf=16).ngf == 16
    with pytest.raises(DistillError, match="unknown preset"):
        get_preset("huge")
    with pytest.raises(DistillError, match="netG must be one of"):
        Pix2PixHDConfig(netG="unet")


def test_nvidia_preset_inner_global_matches_global_preset():
    """NVIDIA's two-stage recipe: the trained global generator's tensors fit the local one's inner part."""
    with torch.device("meta"):
        local = build_generator(get_preset("nvidia"), init=False).state_dict()
        glob = build_generator(get_preset("global"), init=False).state_dict()
    shared = {k: v.shape for k, v in local.items() if k.startswith("model.")}
    assert shared and all(glob[k].shape == s for k, s in shared.items())


def test_discriminator_outputs_and_nvidia_keys():
    cfg = get_preset("tiny", ndf=4, n_layers_D=3, num_D=2)
    D = build_discriminator(cfg)
    keys = set(D.state_dict())
    assert keys == {
        f"scale{i}_layer{j}.0.{p}" for i in range(2) for j in range(5) for p in ("weight", "bias")
    }
    out = D(torch.randn(2, 6, 64, 48))
    assert len(out) == 2 and all(len(feats) == 5 for feats in out)
    # kernel 4, padding 2: stride 2 -> n // 2 + 1, stride 1 -> n + 1; the second scale sees a 2x smaller input.
    assert [tuple(f.shape) for f in out[0]] == [
        (2, 4, 33, 25),
        (2, 8, 17, 13),
        (2, 16, 9, 7),
        (2, 32, 10, 8),
        (2, 1, 11, 9),
    ]
    assert [tuple(f.shape) for f in out[1]] == [
        (2, 4, 17, 13),
        (2, 8, 9, 7),
        (2, 16, 5, 4),
        (2, 32, 6, 5),
        (2, 1, 7, 6),
    ]


def test_onnx_export_matches_torch(tmp_path):
    cfg = get_preset("tiny", netG="local", n_blocks_local=1)
    G = build_generator(cfg).eval()
    _randomize(G, 0)
    path = tmp_path / "g.onnx"
    torch.onnx.export(
        G,
        (torch.zeros(1, 3, 32, 32),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={
            "input": {0: "batch", 2: "height", 3: "width"},
            "output": {0: "batch", 2: "height", 3: "width"},
        },
    )
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 64, 40) * 2 - 1  # another batch size and a non-square size than at export
    with torch.no_grad():
        expected = G(x).numpy()
    got = sess.run(["output"], {"input": x.numpy()})[0]
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-4
