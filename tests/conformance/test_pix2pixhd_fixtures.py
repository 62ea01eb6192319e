"""Conformance with NVIDIA pix2pixHD: the official generator outputs in ../shared/fixtures/pix2pixhd."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from networks.pix2pixhd import infer_config, load_generator


@pytest.mark.parametrize("name", ["global", "local"])
def test_fixture_outputs_reproduced(fixtures_dir, name):
    folder = fixtures_dir / "pix2pixhd"
    io = np.load(folder / f"{name}_io.npz")
    G = load_generator(folder / f"{name}_G.pth")
    assert not G.training
    with torch.no_grad():
        out = G(torch.from_numpy(io["input"]))
    expected = torch.from_numpy(io["output"])
    assert out.shape == expected.shape
    assert (out - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", ["global", "local"])
def test_fixture_config_inferred(fixtures_dir, name):
    folder = fixtures_dir / "pix2pixhd"
    args = json.loads((folder / f"{name}_config.json").read_text())["define_G"]
    cfg = infer_config(torch.load(folder / f"{name}_G.pth", weights_only=True))
    fields = ["input_nc", "output_nc", "ngf", "netG", "n_downsample_global", "n_blocks_global"]
    if args["netG"] == "local":
        fields += ["n_local_enhancers", "n_blocks_local"]
    assert {f: getattr(cfg, f) for f in fields} == {f: args[f] for f in fields}


@pytest.mark.parametrize("prefix", ["module.", "module._orig_mod."])
def test_fixture_loads_with_wrapper_prefix(fixtures_dir, tmp_path, prefix):
    """DataParallel/DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes are stripped."""
    folder = fixtures_dir / "pix2pixhd"
    sd = torch.load(folder / "local_G.pth", weights_only=True)
    torch.save({f"{prefix}{k}": v for k, v in sd.items()}, tmp_path / "latest_net_G.pth")
    io = np.load(folder / "local_io.npz")
    with torch.no_grad():
        out = load_generator(tmp_path / "latest_net_G.pth")(torch.from_numpy(io["input"]))
    assert (out - torch.from_numpy(io["output"])).abs().max().item() < 1e-4
