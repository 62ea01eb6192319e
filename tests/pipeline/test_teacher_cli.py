"""`distill teacher random|info|sample` end to end on tiny generators and the public fixtures."""

from __future__ import annotations

import json

import numpy as np
import torch

from distill.cli import main
from editing.images import load_image
from networks.stylegan2 import load_generator
from training.teacher import sample_images


def test_random_teacher_is_labelled_untrained(tmp_path, capsys):
    out = tmp_path / "tiny.pt"
    assert main(["teacher", "random", "--resolution", "16", "--seed", "3", "--out", str(out)]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    saved = torch.load(out, weights_only=True)
    assert saved["untrained"] is True and "UNTRAINED" in saved["description"] and saved["seed"] == 3
    G = load_generator(out)
    assert G.img_resolution == 16 and G.checkpoint_info["metadata"]["untrained"] is True
    # w_avg is the mean mapped w, so truncation pulls towards the average image rather than towards zero.
    with torch.no_grad():
        ws = G.mapping(torch.randn([256, G.z_dim]))[:, 0]
    assert (ws.mean(0) - G.w_avg).norm() < 0.2 * ws.std(0).norm()
    assert (
        main(["teacher", "random", "--resolution", "16", "--seed", "3", "--out", str(tmp_path / "b.pt")]) == 0
    )
    again = load_generator(tmp_path / "b.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(G.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_info_prints_inferred_config(fixtures_dir, capsys):
    path = fixtures_dir / "rosinality_stylegan2" / "checkpoint.pt"
    config = json.loads((fixtures_dir / "rosinality_stylegan2" / "config.json").read_text())
    assert main(["teacher", "info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "rosinality" and info["resolution"] == config["size"]
    assert info["num_ws"] == config["n_latent"] and info["mapping_layers"] == config["n_mlp"]
    assert info["channels"] == {str(k): v for k, v in config["channels"].items()}
    assert info["parameters"] > 0
    assert main(["teacher", "info", str(path)]) == 0
    table = capsys.readouterr().out
    assert "rosinality" in table and "channels" in table


def test_sample_grid_matches_generator(tmp_path, fixtures_dir):
    path = fixtures_dir / "nvlabs_stylegan2_ada" / "G_state_dict.pt"
    out = tmp_path / "grid.png"
    assert (
        main(
            [
                "teacher",
                "sample",
                str(path),
                "--num",
                "4",
                "--cols",
                "2",
                "--seed",
                "5",
                "--truncation",
                "0.7",
                "--batch",
                "3",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    grid = load_image(out)
    G = load_generator(path)
    res, pad = G.img_resolution, 2
    assert grid.shape == (2 * (res + pad) + pad, 2 * (res + pad) + pad, 3)
    images = sample_images(G, [5, 6, 7, 8], truncation=0.7)
    expected = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    second = grid[pad : pad + res, 2 * pad + res : 2 * pad + 2 * res]  # row 0, column 1 = seed 6
    assert np.abs(second.astype(int) - expected[1].astype(int)).max() <= 1


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not a model")
    assert main(["teacher", "info", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "expected" in err
    assert main(["teacher", "random", "--resolution", "24", "--out", str(tmp_path / "x.pt")]) == 2
    assert "power of two" in capsys.readouterr().err


def test_convert_keeps_images_and_records_source(tmp_path, fixtures_dir):
    src = fixtures_dir / "rosinality_stylegan2" / "checkpoint.pt"
    out = tmp_path / "teacher.pt"
    assert main(["teacher", "convert", str(src), "--out", str(out)]) == 0
    G, H = load_generator(src), load_generator(out)
    assert H.checkpoint_info["format"] == "stylegan2-distill/1"
    meta = H.checkpoint_info["metadata"]
    assert meta["source"]["format"] == "rosinality" and len(meta["source"]["sha256"]) == 64
    z = torch.randn([2, G.z_dim])
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.5), H(z, truncation_psi=0.5))
