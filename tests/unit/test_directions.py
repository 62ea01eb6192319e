"""Latent directions: loading shapes, applying to W+ layers, fitting planted directions, `distill direction fit`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from editing.directions import apply_direction, load_direction
from networks.stylegan2 import Generator, save_generator
from tests.pipeline_helpers import export_scorer
from training.directions import (
    METHODS,
    condition,
    file_sha256,
    fit_direction,
    fit_directions,
    sample_w,
    z_from_seeds,
)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8})
    path = tmp_path_factory.mktemp("teacher") / "g.pt"
    save_generator(G, path)
    return str(path)


@pytest.mark.parametrize("shape", [(8,), (1, 8), (5, 8)])
@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_load_direction_shapes(tmp_path, shape, suffix):
    d = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    path = tmp_path / f"d{suffix}"
    np.save(path, d) if suffix == ".npy" else torch.save(torch.from_numpy(d), path)
    out = load_direction(path, num_ws=5, w_dim=8)
    assert out.shape == (5, 8)
    expected = np.broadcast_to(d.reshape(-1, 8), (5, 8))
    assert np.array_equal(out.numpy(), expected)


@pytest.mark.parametrize("shape", [(7,), (2, 8), (5, 8, 1), (6, 8)])
def test_load_direction_rejects_bad_shape(tmp_path, shape):
    path = tmp_path / "bad.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(DistillError) as e:
        load_direction(path, num_ws=5, w_dim=8)
    assert "bad.npy" in str(e.value) and "(8,), (1, 8) or (5, 8)" in str(e.value)


def test_apply_direction_layers_and_normalize():
    ws = torch.randn(3, 6, 4)
    d = torch.arange(24, dtype=torch.float32).reshape(6, 4)
    out = apply_direction(ws, d, alpha=2.0, layers=(1, 3))
    assert torch.equal(out[:, [0, 3, 4, 5]], ws[:, [0, 3, 4, 5]])
    assert torch.allclose(out[:, 1:3], ws[:, 1:3] + 2.0 * d[1:3])
    clipped = apply_direction(ws, d, alpha=1.0, layers=(0, 8))  # stop clipped to num_ws = 6
    assert torch.allclose(clipped, ws + d)
    unit = apply_direction(ws, d, alpha=1.0, layers=(0, 6), normalize=True) - ws
    assert torch.allclose(unit.norm(dim=2), torch.ones(3, 6))
    tiled = apply_direction(ws, d[2], alpha=1.0, layers=(0, 2))
    assert torch.allclose(tiled[:, :2], ws[:, :2] + d[2])
    with pytest.raises(DistillError):
        apply_direction(ws, d, alpha=1.0, layers=(6, 8))


@pytest.mark.parametrize("method", METHODS)
def test_fit_recovers_planted_direction(method):
    rng = np.random.default_rng(1)
    n, dim = 2000, 32
    planted = rng.standard_normal(dim)
    planted /= np.linalg.norm(planted)
    w = rng.standard_normal((n, dim)) * 0.8 + 0.3
    scores = w @ planted + 0.2 * rng.standard_normal(n)
    fit = fit_direction(w, scores, method=method)
    assert fit.direction.shape == (dim,)
    assert abs(np.linalg.norm(fit.direction) - 1) < 1e-5
    assert float(fit.direction @ planted) > 0.9
    assert fit.n_test == 400 and fit.n_train == 1600
    assert fit.metrics["accuracy"] > 0.85 and fit.metrics["correlation"] > 0.9 and fit.metrics["r2"] > 0.8
    # Held out means held out: pure-noise scores give chance accuracy on the test part.
    noise = fit_direction(w, rng.standard_normal(n), method=method)
    assert noise.metrics["accuracy"] < 0.65 and abs(noise.metrics["correlation"]) < 0.2


def test_fit_rejects_degenerate_input():
    w = np.random.default_rng(0).standard_normal((50, 4))
    with pytest.raises(DistillError):
        fit_direction(w, np.ones(50), method="logistic")
    with pytest.raises(DistillError):
        fit_direction(w, np.ones(49))
    with pytest.raises(DistillError):
        fit_direction(w, np.arange(50.0), method="pca")


def test_cli_fit_from_scores_csv(teacher, tmp_path):
    import networks.stylegan2 as sg

    G = sg.load_generator(teacher)
    seeds = list(range(300))
    w = sample_w(G, seeds, truncation=1.0, device=torch.device("cpu"), batch_size=64)
    # sample_w is the CLI's seed -> z -> w
    with torch.no_grad():
        assert np.allclose(w[:3], G.mapping(z_from_seeds(seeds[:3], G.z_dim))[:, 0].numpy(), atol=1e-6)
    planted = np.random.default_rng(3).standard_normal(w.shape[1])
    planted /= np.linalg.norm(planted)
    scores = (w - w.mean(0)) @ planted
    csv = tmp_path / "scores.csv"
    csv.write_text("seed,age\n" + "".join(f"{s},{v:.9f}\n" for s, v in zip(seeds, scores, strict=True)))
    out = tmp_path / "age.npy"
    rc = main(
        [
            "direction",
            "fit",
            "--generator",
            teacher,
            "--scores",
            str(csv),
            "--method",
            "regression",
            "--attribute",
            "age",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    d = np.load(out)
    # W is anisotropic: regressing w on s = w.p gives Cov(w) p (how w moves with s), not p itself.
    expected = np.cov(w, rowvar=False) @ planted
    expected /= np.linalg.norm(expected)
    assert d.shape == (32,) and float(d @ expected) > 0.9
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["attribute"] == "age" and meta["space"] == "W" and meta["method"] == "regression"
    assert meta["layers"] == [0, 8] and meta["n_samples"] == 300 and meta["suggested_alpha"] > 0
    assert meta["generator"]["sha256"] == file_sha256(teacher)
    assert set(meta["metrics"]) == {"accuracy", "correlation", "r2"}


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_cli_fit_with_onnx_scorer(teacher, tmp_path, capsys):
    class Brightness(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0].mean(dim=(1, 2))], dim=1)

    model = tmp_path / "bright.onnx"
    export_scorer(Brightness(), model, 16)
    out = tmp_path / "bright.npy"
    rc = main(
        [
            "direction",
            "fit",
            "--generator",
            teacher,
            "--scorer",
            str(model),
            "--output-index",
            "1",
            "--num",
            "80",
            "--check",
            "16",
            "--method",
            "all",
            "--attribute",
            "red",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert "reading value 1 of its 2 outputs as 'red'" in capsys.readouterr().out
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["n_samples"] == 80 and meta["n_test"] == 16
    assert [c["method"] for c in meta["comparison"]] == list(METHODS)
    # The saved direction is the one that moved the re-scored, unseen images most, and it makes them redder.
    moved = {c["method"]: c["effect"]["score_delta_mean"] for c in meta["comparison"]}
    assert meta["method"] == max(moved, key=moved.get)
    assert meta["effect"]["n"] == 16 and meta["effect"]["score_delta_mean"] > 0
    assert np.load(out).shape == (32,)


def test_cli_fit_errors_are_one_line(teacher, tmp_path, capsys):
    rc = main(
        ["direction", "fit", "--generator", teacher, "--attribute", "x", "--out", str(tmp_path / "x.npy")]
    )
    assert rc == 2
    assert "--scores" in capsys.readouterr().err


def test_a_csv_with_several_score_columns_names_column(teacher, tmp_path, capsys):
    csv = tmp_path / "scores.csv"
    csv.write_text("seed,age,gender\n" + "".join(f"{s},{s % 7},{s % 2}\n" for s in range(60)))
    base = ["direction", "fit", "--generator", teacher, "--scores", str(csv), "--attribute", "age"]
    base += ["--out", str(tmp_path / "age.npy"), "--device", "cpu"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "several score columns (age, gender)" in err and "--column" in err and len(err.splitlines()) == 1
    assert main([*base, "--column", "height"]) == 2
    assert "--column height: not a score column" in capsys.readouterr().err
    assert main([*base, "--column", "age"]) == 0


def test_teacher_sample_per_seed_writes_the_images_to_score(teacher, tmp_path, capsys):
    out = tmp_path / "faces"
    argv = ["teacher", "sample", teacher, "--per-seed", "--num", "3", "--seed", "5", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["seed000005.png", "seed000006.png", "seed000007.png"]
    assert (out / "seeds.csv").read_text().splitlines() == [
        "seed,file",
        *(f"{s},seed{s:06d}.png" for s in (5, 6, 7)),
    ]
    assert "--scores CSV --truncation 1.0" in capsys.readouterr().out


def _correlated_attributes(n: int = 3000, dim: int = 16, seed: int = 0):
    """w ~ N(0, I) and three linear attributes whose normals overlap: the marginal fit of each leaks into the others."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, dim))
    a[1] = 0.7 * a[0] + 0.5 * a[1]  # smile rises with age ...
    a[2] = -0.5 * a[0] + 0.6 * a[2]  # ... and glasses fall with it
    w = rng.standard_normal((n, dim))
    return w, w @ a.T + 0.05 * rng.standard_normal((n, 3)), a


def test_condition_is_orthogonal_to_the_conditioned_normals():
    rng = np.random.default_rng(0)
    d, normals = rng.standard_normal(12), rng.standard_normal((3, 12))
    out = condition(d, normals)
    assert abs(np.linalg.norm(out) - 1) < 1e-9 and np.abs(normals @ out).max() < 1e-9
    assert float(out @ d) > 0  # what is left of d, not its opposite
    with pytest.raises(DistillError, match="condition on fewer"):
        condition(normals[0], normals)


@pytest.mark.parametrize("mode", ["conditional", "joint"])
def test_decorrelated_directions_leak_less_than_marginal_ones(mode):
    w, scores, a = _correlated_attributes()

    # first-order leak of a direction d_k: attribute j changes by a_j . d_k per a_k . d_k of its own
    def leak(fits):
        moved = a @ np.stack([f.direction for f in fits]).T  # [attribute j, direction k]
        return (moved / np.diag(moved)).T  # [direction k, attribute j]

    marginal = leak(fit_directions(w, scores, mode="marginal"))
    fits = fit_directions(w, scores, mode=mode)
    decorrelated = leak(fits)
    off = ~np.eye(3, dtype=bool)
    assert np.abs(marginal[off]).max() > 0.3  # the synthetic case does leak
    assert np.abs(decorrelated[off]).max() < 0.05
    assert all(f.metrics["correlation"] > 0.3 and f.n_test == 600 for f in fits)
    if mode == "conditional":  # orthogonal to the other attributes' (true) normals
        normals = a / np.linalg.norm(a, axis=1, keepdims=True)
        for k, f in enumerate(fits):
            assert np.abs(np.delete(normals, k, axis=0) @ f.direction).max() < 0.02
    else:  # joint: alpha_per_unit moves the attribute by one unit, the others held fixed
        for k, f in enumerate(fits):
            assert abs(f.alpha_per_unit * float(a[k] @ f.direction) - 1) < 0.05
    with pytest.raises(DistillError, match="at least two"):
        fit_directions(w, scores[:, :1], mode=mode)


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_cli_fit_set_reports_the_leak(teacher, tmp_path, capsys):
    class Channels(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # brightness and redness move together
            return torch.stack([x.mean(dim=(1, 2, 3)), x[:, 0].mean(dim=(1, 2)), x[:, 2].mean(dim=(1, 2))], 1)

    model = tmp_path / "channels.onnx"
    export_scorer(Channels(), model, 16)
    out = tmp_path / "dirs"
    argv = ["direction", "fit-set", "--generator", teacher, "--scorer", str(model), "--num", "1000"]
    argv += ["--attribute", "bright=0", "--attribute", "red=1", "--attribute", "blue=2", "--check", "100"]
    assert main([*argv, "--out-dir", str(out), "--device", "cpu"]) == 0
    assert "conditional directions" in capsys.readouterr().out
    report = json.loads((out / "leak.json").read_text())
    assert report["attributes"] == ["bright", "red", "blue"] and set(report["leak"]) == {
        "marginal",
        "conditional",
    }
    marginal, conditional = (np.array(report["leak"][m]) for m in ("marginal", "conditional"))
    assert np.allclose(np.diag(conditional), 1) and np.allclose(np.diag(marginal), 1)
    # Redness is a third of brightness and correlates with blueness here: the marginal edits change the other
    # two attributes by 0.3 to 1.7 per unit of their own, the conditional ones by far less overall.
    off = ~np.eye(3, dtype=bool)
    assert np.abs(marginal[off]).min() > 0.2
    assert np.abs(conditional[off]).sum() < 0.6 * np.abs(marginal[off]).sum()
    side = json.loads((out / "red.json").read_text())
    assert side["attribute"] == "red" and side["mode"] == "conditional"
    assert side["decorrelated_from"] == ["bright", "blue"] and side["leak"]["conditional"]["red"] == 1
    assert np.load(out / "red.npy").shape == (32,)
    assert "| red |" in (out / "leak.md").read_text()
    assert main([*argv, "--mode", "joint", "--out-dir", str(tmp_path / "joint"), "--device", "cpu"]) == 0
    joint = np.array(json.loads((tmp_path / "joint" / "leak.json").read_text())["leak"]["joint"])
    assert np.abs(joint[off]).sum() < 0.6 * np.abs(marginal[off]).sum()
    side = json.loads((tmp_path / "joint" / "red.json").read_text())
    assert side["method"] == "joint" and side["alpha_per_unit"] > 0
    capsys.readouterr()
    assert main([*argv[:10], "--out-dir", str(out)]) == 2  # one attribute: nothing to decorrelate from
    err = capsys.readouterr().err
    assert "--attribute" in err and "at least two" in err and len(err.strip().splitlines()) == 1
