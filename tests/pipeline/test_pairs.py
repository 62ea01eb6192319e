"""`distill pairs`: determinism, the edit itself, resume after a real SIGKILL, shards and pairs-merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import DistillError
from distill.cli import main
from editing.images import load_image, to_uint8
from networks.stylegan2 import load_generator
from training.directions import z_from_seeds
from training.manifest import read_manifest, read_metadata
from training.pairs import LATENTS, PENDING, generate_pairs, merge_datasets


@pytest.fixture(scope="module")
def teacher(pair_teacher: tuple[str, str]) -> tuple[str, str]:
    return pair_teacher


def gen(teacher, out, **kw):
    g, d = teacher
    args = {
        "alpha": 1.5,
        "truncation": 0.7,
        "num": 6,
        "batch_size": 4,
        "device": "cpu",
        "progress": False,
        **kw,
    }
    return generate_pairs(g, d, out, **args)


def pixels(root: Path) -> dict[str, np.ndarray]:
    files = sorted(root.glob("train_[AB]/*"))
    return {f"{f.parent.name}/{f.name}": load_image(f) for f in files}


def latents(root: Path) -> dict[str, np.ndarray]:
    with np.load(root / LATENTS) as z:
        return {k: z[k] for k in z.files}


def assert_same_dataset(a: Path, b: Path, exact: bool = True) -> None:
    pa, pb = pixels(a), pixels(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        diff = np.abs(pa[k].astype(int) - pb[k].astype(int)).max()
        assert diff == 0 if exact else diff <= 1, (k, diff)
    assert [r.to_json() for r in read_manifest(a)] == [r.to_json() for r in read_manifest(b)]
    la, lb = latents(a), latents(b)
    assert np.array_equal(la["seeds"], lb["seeds"])
    assert np.allclose(la["w"], lb["w"], atol=0 if exact else 1e-5)
    assert np.allclose(la["w_edit"], lb["w_edit"], atol=0 if exact else 1e-5)


def assert_complete(root: Path, seeds: list[int]) -> None:
    """Every seed exactly once, both images decode, latents match, no temp or pending files left."""
    rows = read_manifest(root)
    assert [r.seed for r in rows] == seeds
    for r in rows:
        assert load_image(root / r.a).shape == (16, 16, 3) and load_image(root / r.b).shape == (16, 16, 3)
    assert sorted(p.name for p in (root / "train_A").iterdir()) == [f"{s:08d}.png" for s in seeds]
    assert sorted(p.name for p in (root / "train_B").iterdir()) == [f"{s:08d}.png" for s in seeds]
    assert latents(root)["seeds"].tolist() == seeds
    assert not list(root.rglob("*.tmp")) and not (root / PENDING).exists()


def test_pairs_layout_and_edit(teacher, tmp_path):
    out = tmp_path / "ds"
    gen(teacher, out, num=5)
    assert_complete(out, list(range(5)))
    meta = read_metadata(out)
    assert meta["alpha"] == 1.5 and meta["truncation"] == 0.7 and meta["layers"] == [0, 6]
    assert meta["resolution"] == 16 and meta["noise_mode"] == "const" and len(meta["teacher"]["sha256"]) == 64
    assert load_image(out / "preview.png").shape[0] > 16
    row = read_manifest(out)[0]
    assert (row.alpha, row.truncation, row.direction, row.keep) == (1.5, 0.7, "d.npy", None)
    # The pair is exactly the teacher's output for seed -> z -> w and w + alpha * d on layers 0..num_ws.
    G = load_generator(teacher[0])
    d = torch.from_numpy(np.load(teacher[1]))
    with torch.no_grad():
        ws = G.mapping(z_from_seeds([3], G.z_dim), truncation_psi=0.7)
        ws_edit = ws + 1.5 * d
        a, b = to_uint8(G.synthesis(torch.cat([ws, ws_edit]), noise_mode="const"))
    lat = latents(out)
    assert np.allclose(lat["w"][3], ws[0, 0].numpy(), atol=1e-6)
    assert np.allclose(lat["w_edit"][3], ws_edit[0].numpy(), atol=1e-6)
    assert np.abs(load_image(out / "train_A/00000003.png").astype(int) - a.astype(int)).max() <= 1
    assert np.abs(load_image(out / "train_B/00000003.png").astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(a, b)


def test_pairs_deterministic(teacher, tmp_path):
    gen(teacher, tmp_path / "one", num=6, batch_size=4)
    gen(teacher, tmp_path / "two", num=6, batch_size=4)
    assert_same_dataset(tmp_path / "one", tmp_path / "two", exact=True)
    # Other batch sizes change float summation order on the CPU: at most one grey level apart.
    gen(teacher, tmp_path / "three", num=6, batch_size=1)
    assert_same_dataset(tmp_path / "one", tmp_path / "three", exact=False)


def test_resume_after_sigkill(teacher, tmp_path):
    g, d = teacher
    num = 12
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "distill",
        "pairs",
        "--generator",
        g,
        "--direction",
        d,
        "--num",
        str(num),
        "--batch-size",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "train_B").glob("*.png"))) >= 3:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = {r.seed for r in read_manifest(out)} if (out / "manifest.jsonl").is_file() else set()
    assert len(finished) < num, "the killed run had already finished"

    subprocess.run(cmd, check=True, capture_output=True)
    assert_complete(out, list(range(num)))
    ref = tmp_path / "reference"
    subprocess.run([*cmd[:-1], str(ref)], check=True, capture_output=True)
    assert_same_dataset(out, ref, exact=True)
    assert json.loads((out / "dataset.json").read_text()) == json.loads((ref / "dataset.json").read_text())


def test_crash_between_latents_and_manifest(teacher, tmp_path, monkeypatch):
    """The one window where two files change: latents.npz is new, manifest.jsonl still old."""
    import training.pairs

    out = tmp_path / "ds"
    gen(teacher, out, num=3, batch_size=1)

    def crash(*_a, **_k):
        raise RuntimeError("killed")

    monkeypatch.setattr(training.pairs, "write_manifest", crash)
    with pytest.raises(RuntimeError):
        gen(teacher, out, num=6, batch_size=1)
    monkeypatch.undo()
    assert [r.seed for r in read_manifest(out)] == [0, 1, 2] and latents(out)["seeds"].tolist() == list(
        range(6)
    )
    gen(teacher, out, num=6, batch_size=1)
    assert_complete(out, list(range(6)))
    gen(teacher, tmp_path / "ref", num=6, batch_size=1)
    assert_same_dataset(out, tmp_path / "ref", exact=True)


def test_shards_are_disjoint_and_merge_to_the_full_set(teacher, tmp_path):
    # batch size 1 everywhere: batches of other seeds may differ by one grey level (see above)
    full = tmp_path / "full"
    gen(teacher, full, num=7, batch_size=1)
    shards = [tmp_path / f"shard{i}" for i in range(3)]
    for i, s in enumerate(shards):
        gen(teacher, s, num=7, batch_size=1, shard=i, num_shards=3)
        assert [r.seed for r in read_manifest(s)] == [x for x in range(7) if x % 3 == i]
    assert main(["pairs-merge", str(tmp_path / "merged"), *map(str, shards)]) == 0
    assert_complete(tmp_path / "merged", list(range(7)))
    assert_same_dataset(tmp_path / "merged", full, exact=True)
    # Two shards writing into one folder finish the same set.
    shared = tmp_path / "shared"
    gen(teacher, shared, num=7, batch_size=1, shard=1, num_shards=2)
    gen(teacher, shared, num=7, batch_size=1, shard=0, num_shards=2)
    assert_complete(shared, list(range(7)))
    assert_same_dataset(shared, full, exact=True)


def test_mismatched_settings_are_refused(teacher, tmp_path):
    gen(teacher, tmp_path / "a", num=2)
    gen(teacher, tmp_path / "b", num=2, alpha=2.0)
    with pytest.raises(DistillError, match="alpha 1.5 vs 2.0"):
        merge_datasets(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(DistillError, match="alpha"):
        gen(teacher, tmp_path / "a", num=4, alpha=2.0)
    assert [r.seed for r in read_manifest(tmp_path / "a")] == [0, 1]


def test_cli_errors_are_one_line(teacher, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((3, 32), np.float32))
    rc = main(
        [
            "pairs",
            "--generator",
            teacher[0],
            "--direction",
            str(bad),
            "--num",
            "2",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "bad.npy" in err and "(32,), (1, 32) or (6, 32)" in err and "Traceback" not in err
    rc = main(
        [
            "pairs",
            "--generator",
            teacher[0],
            "--direction",
            teacher[1],
            "--num",
            "2",
            "--shard",
            "2",
            "--num-shards",
            "2",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 2


def test_a_shard_says_its_own_count_and_the_folder_s_so_far(teacher, tmp_path, capsys):
    """Two shards writing one folder: the first to finish must not print a partial total as the dataset's."""
    argv = ["pairs", "--generator", teacher[0], "--direction", teacher[1], "--num", "5", "--device", "cpu"]
    out = str(tmp_path / "shared")
    assert main([*argv, "--out", out, "--shard", "1", "--num-shards", "2", "--batch-size", "2"]) == 0
    assert "shard 1 of 2 done (2 of its 2 pairs); the folder holds 2 of 5 so far" in capsys.readouterr().out
    assert main([*argv, "--out", out, "--shard", "0", "--num-shards", "2", "--batch-size", "2"]) == 0
    assert "shard 0 of 2 done (3 of its 3 pairs); the folder holds 5 of 5 so far" in capsys.readouterr().out


@pytest.mark.parametrize(
    "checkpoint", ["nvlabs_stylegan2_ada/G_state_dict.pt", "rosinality_stylegan2/checkpoint.pt"]
)
def test_pairs_from_official_checkpoints(fixtures_dir, tmp_path, checkpoint):
    """Both official layouts go through `distill pairs` and `distill filter` unchanged."""
    path = Path(fixtures_dir) / checkpoint
    G = load_generator(path)
    np.save(tmp_path / "d.npy", np.ones(G.w_dim, np.float32))
    out = tmp_path / "ds"
    assert (
        main(
            [
                "pairs",
                "--generator",
                str(path),
                "--direction",
                str(tmp_path / "d.npy"),
                "--num",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = read_manifest(out)
    assert [r.seed for r in rows] == [0, 1]
    assert load_image(out / rows[0].b).shape == (G.img_resolution, G.img_resolution, 3)
    assert read_metadata(out)["layers"] == [0, min(8, G.num_ws)]
    assert main(["filter", str(out), "--face-detector"]) == 0
    assert {r.reason for r in read_manifest(out)} == {"no face"}
