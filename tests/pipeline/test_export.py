"""`distill export`: ONNX parity with PyTorch, the model-zoo entry it writes, and the variant gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from core.errors import DistillError
from distill.cli import main
from distill.commands.export import layers_option
from editing.images import save_image
from engines.ort import cpu_session
from model_zoo.registry import ModelZooError, get_entry, sha256_file
from model_zoo.schema import PROJECT_ROOT
from networks.pix2pixhd import save_generator
from tests.pipeline_helpers import tiny_generator
from training.export import check_parity, export_onnx, parity_sizes
from training.manifest import PairRecord, write_manifest, write_metadata
from training.variants import run_session

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """12 kept pairs of smooth 32x32 images (B = A with swapped colour channels) plus a fake teacher/direction."""
    root = tmp_path_factory.mktemp("pairs")
    assets = tmp_path_factory.mktemp("assets")
    teacher, direction = assets / "teacher.pt", assets / "age.npy"
    teacher.write_bytes(b"teacher weights " * 64)
    np.save(direction, np.ones((8, 16), np.float32))
    (assets / "age.json").write_text(
        json.dumps(
            {
                "attribute": "age",
                "method": "regression",  # as an older fit wrote it
                "generator": {"path": str(teacher.resolve())},
                "scores_from": [str(root.resolve() / "scores.csv")],
            }
        )
    )
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(12):
        low = rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)
        a = np.asarray(Image.fromarray(low).resize((SIZE, SIZE), Image.BICUBIC))
        save_image(root / f"train_A/{seed:08d}.png", a)
        save_image(root / f"train_B/{seed:08d}.png", np.ascontiguousarray(a[..., ::-1]))
        rows.append(
            PairRecord(
                seed,
                f"train_A/{seed:08d}.png",
                f"train_B/{seed:08d}.png",
                1.5,
                0.7,
                str(direction),
                keep=True,
            )
        )
    write_manifest(
        root, rows + [PairRecord(99, "train_A/x.png", "train_B/x.png", 1.5, 0.7, str(direction), keep=False)]
    )
    write_metadata(
        root,
        {
            "teacher": {
                "path": str(teacher),
                "sha256": sha256_file(teacher),
                "z_dim": 16,
                "w_dim": 16,
                "num_ws": 8,
            },
            "direction": {
                "path": str(direction),
                "sha256": sha256_file(direction),
                "attribute": "age",
                "method": "regression",
            },
            "alpha": 1.5,
            "truncation": 0.7,
            "layers": [0, 8],
            "normalize": False,
            "resolution": SIZE,
        },
    )
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, dataset) -> Path:
    """A training run folder as `distill train` writes it (checkpoint, run.json, metrics.jsonl)."""
    run = tmp_path_factory.mktemp("run")
    G = tiny_generator()
    save_generator(G, run / "checkpoints" / "latest.pt", G.config, epoch=3)
    (run / "run.json").write_text(
        json.dumps(
            {
                "format": "distill-run/1",
                "status": "finished",
                "dataset": str(dataset),
                "preset": "tiny",
                "data": {"pairs": 13, "kept": 12, "height": SIZE, "width": SIZE, "stride": 4},
                "options": {"val_fraction": 0.25, "seed": 0},
                "epoch": 3,
                "global_step": 30,
                "metrics": {"val_psnr": 10.0, "val_ssim": 0.1},
            }
        )
    )
    rows = [
        {"kind": "step", "step": 10, "loss_G": 1.0},
        {"kind": "epoch", "epoch": 1, "step": 10, "val_psnr": 12.5, "val_ssim": 0.3},
        {"kind": "epoch", "epoch": 2, "step": 20, "val_psnr": 14.25, "val_ssim": 0.4},
        {"kind": "step", "step": 30},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


@pytest.mark.parametrize("netG", ["global", "local"])
def test_onnx_matches_torch_at_two_sizes_batch_2(tmp_path, netG):
    G = tiny_generator(netG=netG)
    path = export_onnx(G, tmp_path / "m.onnx", (SIZE, SIZE))
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == [
        "output"
    ]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) == 17
    session = cpu_session(path)
    sizes = parity_sizes((SIZE, SIZE), G.config.stride)
    assert len(sizes) == 2 and sizes[1][0] != sizes[1][1]
    for h, w in sizes:
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w)) * 2 - 1
        with torch.no_grad():
            ref = G(x).numpy()
        out = run_session(session, x.numpy(), batch=2)
        assert out.shape == (2, 3, h, w)
        assert np.abs(out - ref).max() <= 1e-4


def test_parity_check_catches_a_wrong_graph(tmp_path):
    path = export_onnx(tiny_generator(seed=0), tmp_path / "m.onnx", (SIZE, SIZE))
    report = check_parity(tiny_generator(seed=0), path, [(SIZE, SIZE), (16, 24)])
    assert report["parity_max_abs_diff"] <= 1e-4 and set(report["parity_per_size"]) == {"32x32", "16x24"}
    with pytest.raises(DistillError, match=r"differs from PyTorch by .* \(> 0.001\)"):
        check_parity(tiny_generator(seed=1), path, [(SIZE, SIZE)])


def _export(run, out, *extra) -> int:
    return main(
        [
            "export",
            str(run),
            "--out",
            str(out),
            "--timing-repeats",
            "1",
            "--num-calibration",
            "6",
            "--num-eval",
            "3",
            *extra,
        ]
    )


def test_export_run_writes_a_verified_entry(tmp_path, run_dir, dataset, capsys):
    out = tmp_path / "zoo" / "age-tiny"
    assert _export(run_dir, out, "--variants", "fp16,int8", "--min-variant-psnr", "0") == 0
    entry = get_entry("age-tiny", tmp_path / "zoo")
    m = entry.manifest
    assert m["name"] == "age-tiny" and entry.input_size == (SIZE, SIZE) and entry.stride == 4
    assert (
        m["input"]["name"] == "input"
        and m["input"]["range"] == [-1, 1]
        and m["input"]["size_source"] == "run.json"
    )
    assert m["edit"] == {"attribute": "age", "alpha": 1.5, "layers": [0, 8]}
    assert m["truncation"] == 0.7
    assert entry.teacher_path.read_bytes() == (b"teacher weights " * 64)
    assert np.array_equal(np.load(entry.direction_path), np.ones((8, 16), np.float32))
    assert m["direction"]["normalize"] is False and not {"alpha", "layers"} & set(
        m["direction"]
    )  # said once, in edit
    assert m["schema_version"] == 1 and m["training"]["checkpoint_sha256"] == sha256_file(
        run_dir / "checkpoints/latest.pt"
    )
    for where in (
        m["teacher"]["source"],
        m["direction"]["source"],
        m["data"]["dataset"],
        m["training"]["checkpoint"],
    ):
        assert not Path(where).is_absolute()  # outside the project: the bare name, no build path
    assert m["data"]["pairs_total"] == 13 and m["data"]["pairs_kept"] == 12
    assert m["data"]["heldout_pairs"] + m["data"]["train_pairs"] == 12 and m["data"]["heldout_pairs"] >= 1
    assert m["training"]["heldout"] == {"val_psnr": 14.25, "val_ssim": 0.4, "epoch": 2, "step": 20}
    assert m["training"]["config"]["ngf"] == 4
    assert m["export"]["opset"] == 17 and m["export"]["parity_max_abs_diff"] <= 1e-4
    assert m["export"]["parity_batch"] == 2 and len(m["export"]["parity_per_size"]) == 2
    assert set(m["variants"]) == {"fp32", "fp16", "int8"} and m["refused_variants"] == {}
    int8 = m["variants"]["int8"]
    assert int8["providers"] == ["CPUExecutionProvider"] and int8["calibration_images"] == 6
    assert int8["psnr_vs_fp32_db"] > 0 and int8["median_ms"] > 0 and int8["error_images"] == 3
    assert m["variants"]["fp16"]["psnr_vs_fp32_db"] > 35 and m["variants"]["fp16"]["providers"] == [
        "CUDAExecutionProvider"
    ]
    for fname, rec in m["files"].items():
        assert rec["sha256"] == sha256_file(out / fname) and rec["bytes"] == (out / fname).stat().st_size
    sidecar = json.loads((out / "direction.json").read_text())  # the fit's record, without build paths
    assert sidecar["method"] == "regression" and sidecar["generator"]["path"] == "teacher.pt"
    assert sidecar["scores_from"] == ["scores.csv"]
    samples = {f for f in m["files"] if f.startswith("samples/")}
    assert {
        "model.onnx",
        "model.fp16.onnx",
        "model.int8.onnx",
        "preview.png",
        "teacher.pt",
        "direction.npy",
        "direction.json",
    } == set(m["files"]) - samples
    assert 1 <= len(samples) <= 4 and all((dataset / "train_A" / Path(f).name).is_file() for f in samples)
    preview = np.asarray(Image.open(out / "preview.png"))
    assert m["preview"]["columns"] == ["input", "student", "teacher target"]
    assert preview.shape[1] == 3 * SIZE + 4 * 2 and preview.shape[0] == m["preview"]["rows"] * (SIZE + 2) + 2
    assert not any(p.name.startswith(".") for p in (tmp_path / "zoo").iterdir())

    # int8 ONNX output is the fp32 graph's, up to quantization: same shape, finite.
    y = run_session(cpu_session(entry.variant_path("int8")), np.zeros((1, 3, 16, 24), np.float32))
    assert y.shape == (1, 3, 16, 24) and np.isfinite(y).all()

    # the gate: the same int8 variant is refused when the bound is above its figure, and the figure is reported
    capsys.readouterr()
    out2 = tmp_path / "zoo" / "age-gated"
    bound = int8["psnr_vs_fp32_db"] + 1
    assert _export(run_dir, out2, "--variants", "int8", "--min-variant-psnr", str(bound)) == 2
    err = capsys.readouterr()
    assert f"PSNR against fp32 is {int8['psnr_vs_fp32_db']:.2f} dB" in err.out
    assert "int8" in err.err and f"< {bound:g} dB" in err.err and "written without them" in err.err
    gated = get_entry("age-gated", tmp_path / "zoo")
    assert set(gated.variants) == {"fp32"} and not (out2 / "model.int8.onnx").exists()
    assert gated.manifest["refused_variants"]["int8"]["psnr_vs_fp32_db"] == int8["psnr_vs_fp32_db"]


def test_export_checkpoint_file_without_dataset(tmp_path, capsys):
    G = tiny_generator(netG="local")
    pth = tmp_path / "latest_net_G.pth"
    torch.save(G.state_dict(), pth)  # NVIDIA's flat layout
    out = tmp_path / "zoo" / "nvidia"
    assert main(["export", str(pth), "--out", str(out), "--size", "32x48", "--timing-repeats", "0"]) == 0
    entry = get_entry("nvidia", tmp_path / "zoo")
    assert (
        entry.input_size == (32, 48)
        and entry.stride == 8
        and entry.manifest["input"]["size_source"] == "--size"
    )
    assert entry.teacher_path is None and entry.direction_path is None and entry.manifest["data"] == {}
    assert entry.manifest["preview"]["columns"] == ["input", "student"]
    assert "random" in entry.manifest["preview"]["inputs"]

    assert main(["export", str(pth), "--out", str(out), "--size", "32x48"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["export", str(pth), "--out", str(tmp_path / "zoo" / "q"), "--size", "32", "--variants", "int8"])
        == 2
    )
    assert "--calibration DATASET" in capsys.readouterr().err
    assert main(["export", str(pth), "--out", str(tmp_path / "zoo" / "q"), "--size", "36"]) == 2
    assert "not a multiple of the generator stride 8" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "zoo" / "q")]) == 2
    assert "not a training run (no checkpoints/latest.pt)" in capsys.readouterr().err
    assert not (tmp_path / "zoo" / "q").exists()


def test_corrupt_or_truncated_export_refused(tmp_path):
    G = tiny_generator()
    ckpt = tmp_path / "g.pt"
    save_generator(G, ckpt, G.config)
    assert (
        main(
            [
                "export",
                str(ckpt),
                "--out",
                str(tmp_path / "zoo" / "m"),
                "--size",
                "32",
                "--timing-repeats",
                "0",
            ]
        )
        == 0
    )
    onnx_path = tmp_path / "zoo" / "m" / "model.onnx"
    good = onnx_path.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 3] ^= 0x20
    onnx_path.write_bytes(bytes(flipped))
    with pytest.raises(
        ModelZooError, match=r"model\.onnx: sha256 does not match the manifest \(the file is corrupt\)"
    ):
        get_entry("m", tmp_path / "zoo")
    onnx_path.write_bytes(good[:-10])
    with pytest.raises(
        ModelZooError, match=rf"model\.onnx: {len(good) - 10} bytes, the manifest says {len(good)}"
    ):
        get_entry("m", tmp_path / "zoo")
    onnx_path.write_bytes(good)
    assert get_entry("m", tmp_path / "zoo").variant_path() == onnx_path


def test_layers_are_spelled_start_colon_stop_and_the_old_form_still_works(capsys):
    assert layers_option(["0:8"]) == (0, 8) and layers_option(None) is None
    assert capsys.readouterr().err == ""
    assert layers_option(["2", "6"]) == (2, 6)
    assert "--layers 2 6 is deprecated; write --layers 2:6" in capsys.readouterr().err
    for bad in (["8:2"], ["0", "8", "9"], ["a:b"]):
        with pytest.raises(DistillError, match="--layers"):
            layers_option(bad)


def test_export_records_the_domain_of_the_pairs_filter_report(tmp_path, run_dir, dataset):
    """The filter report beside the pairs: its keep range named by --domain, the scorer shipped in the entry."""
    attributes = PROJECT_ROOT / "model_zoo" / "toyfaces-attributes" / "attributes.onnx"
    pairs = tmp_path / "pairs"
    shutil.copytree(dataset, pairs)
    scorer = {
        "type": "onnx",
        "path": str(attributes),
        "input_size": None,
        "mean": [0.5],
        "std": [0.5],
        "outputs": {"age": 0, "quality": 9},
        "activation": "none",
        "on": "both",
        "keep": {"age": [0.2, None], "quality": [0.5, None]},
    }
    (pairs / "filter_report.json").write_text(json.dumps({"scorers": [scorer]}))
    out = tmp_path / "zoo" / "age-domain"
    assert _export(run_dir, out, "--calibration", str(pairs), "--domain", "age") == 0
    entry = get_entry("age-domain", tmp_path / "zoo")
    domain = entry.manifest["domain"]
    assert domain["keep"] == {"age": [0.2, None]} and domain["outputs"] == {"age": 0}
    assert domain["input_size"] == [64, 64] and domain["scorer"] in entry.manifest["files"]
    assert (out / domain["scorer"]).read_bytes() == attributes.read_bytes()
    assert _export(run_dir, tmp_path / "plain" / "age-plain") == 0  # the run's own pairs: no filter report
    assert "domain" not in get_entry("age-plain", tmp_path / "plain").manifest
