"""distill evaluate on tiny entries built here: a tiny random teacher, students and a scorer whose answers are known.

- "copy": a zero direction and an identity student, so the student's output IS the teacher's edit (at twice
  the teacher's size: the resize path): PSNR at the metric's ceiling, SSIM 1, no attribute change.
- "bright": a brightness direction fitted on the teacher, a student that adds a constant to every pixel,
  and a scorer that reads mean brightness and red-minus-green: the teacher's edit success and every
  figure are recomputed here independently from the seeds.
"""

from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import DistillError, FieldError
from distill.cli import main
from editing.directions import apply_direction
from editing.images import from_uint8, to_uint8
from model_zoo.registry import write_entry
from networks.stylegan2 import save_generator
from tests.pipeline_helpers import scorer_onnx, student_onnx
from training.directions import fit_direction, sample_w, z_from_seeds
from training.evaluate import EvaluateOptions, _ratios, edit_figures, evaluate, latency, spread
from training.manifest import PairRecord, write_manifest
from training.metrics import psnr
from training.teacher import random_generator

RES = 16
TRUNCATION = 0.7
BRIGHTEN = 0.25  # the "bright" student adds this to every pixel in [-1, 1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    G = random_generator(RES, seed=3)
    save_generator(G, root / "teacher.pt")
    seeds = list(range(200))
    w = sample_w(G, seeds, TRUNCATION, torch.device("cpu"), 50)
    with torch.no_grad():
        images = G(z_from_seeds(seeds, G.z_dim), truncation_psi=TRUNCATION)
    fit = fit_direction(w, images.mean(dim=(1, 2, 3)).numpy(), method="regression")
    np.save(root / "brightness.npy", fit.direction.astype(np.float32))
    np.save(root / "zero.npy", np.zeros(G.w_dim, np.float32))
    dataset = root / "pairs"
    dataset.mkdir()
    write_manifest(
        dataset,
        [
            PairRecord(
                seed=s,
                a=f"train_A/{s:08d}.png",
                b=f"train_B/{s:08d}.png",
                alpha=1.0,
                truncation=TRUNCATION,
                direction="brightness.npy",
            )
            for s in range(10)
        ],
    )
    zoo = root / "zoo"
    alpha = 3 * fit.suggested_alpha
    for name, add, direction, size in (
        ("copy", 0.0, "zero.npy", 2 * RES),
        ("bright", BRIGHTEN, "brightness.npy", RES),
        ("identity", 0.0, "brightness.npy", RES),
    ):
        entry = zoo / name
        entry.mkdir(parents=True)
        student_onnx(entry / "model.onnx", add)
        shutil.copyfile(entry / "model.onnx", entry / "model.int8.onnx")
        shutil.copyfile(root / "teacher.pt", entry / "teacher.pt")
        shutil.copyfile(root / direction, entry / "direction.npy")
        manifest = {
            "name": name,
            "description": f"test student {name}",
            "edit": {"attribute": "brightness", "alpha": alpha, "layers": [0, 8]},
            "input": {
                "name": "input",
                "layout": "NCHW",
                "dtype": "float32",
                "size": [size, size],
                "channels": 3,
                "range": [-1, 1],
                "stride": 4,
            },
            "output": {"name": "output"},
            "variants": {"fp32": {"file": "model.onnx"}, "int8": {"file": "model.int8.onnx"}},
            "teacher": {"file": "teacher.pt"},
            "direction": {"file": "direction.npy", "alpha": alpha, "layers": [0, 8], "normalize": False},
            "truncation": TRUNCATION,
            "data": {"dataset": str(dataset)},
        }
        write_entry(entry, manifest, ["model.onnx", "model.int8.onnx", "teacher.pt", "direction.npy"])
    scorer_onnx(root / "scorer.onnx")
    return {
        "root": root,
        "zoo": zoo,
        "G": G,
        "direction": torch.from_numpy(fit.direction).float(),
        "alpha": alpha,
    }


def _evaluate(setup, name, out, *extra):
    argv = [
        "evaluate",
        name,
        "--model-zoo",
        str(setup["zoo"]),
        "--out",
        str(out),
        "--num",
        "6",
        "--legacy-num",
        "2",
        "--legacy-steps",
        "5",
        "--variants",
        "fp32,int8",
        *extra,
    ]
    assert main(argv) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def _md_row(md: str, label: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_exact_student_scores_the_metric_ceiling(setup, tmp_path):
    report, md = _evaluate(setup, "copy", tmp_path / "copy", "--legacy-num", "0")
    fid = report["fidelity"]["student_fp32"]
    ceiling = float(psnr(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)))
    assert fid["psnr"]["n"] == 6
    assert fid["psnr"]["p10"] == pytest.approx(ceiling, abs=1e-3) and fid["ssim"]["mean"] == pytest.approx(
        1.0, abs=1e-6
    )
    assert report["fidelity"]["student_int8"]["psnr"]["mean"] == pytest.approx(ceiling, abs=1e-3)
    assert "legacy" not in report["fidelity"] and "legacy" not in report["latency"]
    assert not report["edit"]["available"] and "need an attribute scorer" in md
    assert report["entry"]["input_size"] == [2 * RES, 2 * RES] and report["teacher"]["resolution"] == RES
    assert _md_row(md, "student fp32")[1] == f"{fid['psnr']['mean']:.2f}"


def test_identity_student_scores_the_identity_row(setup, tmp_path):
    """A student that returns its input IS the do-nothing baseline: its fidelity row is the identity row, image by
    image, below the ceiling by the teacher's real edit; its speedup figures are ratios of the latency rows.
    Called from Python with the options object, as the README shows."""
    out = tmp_path / "identity"
    report = evaluate(
        EvaluateOptions(
            entry="identity", model_zoo=str(setup["zoo"]), out=out, num=6, legacy_num=0, timing_num=3
        )
    )
    fid, ceiling = report["fidelity"], float(psnr(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)))
    for variant in ("student_fp32", "student_int8"):
        for metric in ("psnr", "ssim"):
            assert fid[variant][metric] == pytest.approx(fid["identity"][metric])
    assert (
        fid["identity"]["psnr"]["p90"] < ceiling - 10
    )  # the teacher's edit is real: returning the input costs dB
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(
        r["psnr_fp32"] == r["psnr_identity"] and r["ssim_fp32"] == r["ssim_identity"] for r in rows
    )
    lat = report["latency"]
    assert lat["student_fp32"]["n"] == 3 and lat["student_int8"]["n"] == 3 and "legacy" not in lat
    assert report["speedup"] == {
        "student_fp32_vs_student_int8": pytest.approx(
            {
                "mean": lat["student_fp32"]["mean_ms"] / lat["student_int8"]["mean_ms"],
                "p50": lat["student_fp32"]["p50_ms"] / lat["student_int8"]["p50_ms"],
            }
        )
    }
    assert (
        report["command"].startswith("distill evaluate identity ")
        and "--variants fp32,int8" in report["command"]
    )


def test_report_figures_on_known_numbers():
    assert spread([1, 2, 3, 4, 5]) == {"n": 5, "mean": 3.0, "p10": 1.4, "p50": 3.0, "p90": 4.6}
    assert latency([0.001, 0.002, 0.003, 0.004]) == pytest.approx(
        {"n": 4, "mean_ms": 2.5, "p50_ms": 2.5, "p95_ms": 3.85}
    )
    assert _ratios({"mean_ms": 10.0, "p50_ms": 8.0}, {"mean_ms": 2.0, "p50_ms": 4.0}) == {
        "mean": 5.0,
        "p50": 2.0,
    }
    # Success needs half the teacher's move in its direction; preservation is the mean change of the others.
    orig, teacher = np.zeros(4), np.ones(4)
    out = np.array([0.5, 0.49, 2.0, -1.0])
    fig = edit_figures(orig, teacher, out, 1.0, {"hue": (np.zeros(4), np.array([0.1, -0.1, 0.0, 0.2]))})
    assert fig["edit_success"] == 0.5 and fig["mean_change"] == pytest.approx(0.4975)
    assert fig["preservation"] == pytest.approx(0.1) and fig["n"] == 4
    falling = edit_figures(
        orig, -teacher, -out, -1.0, {}
    )  # a teacher that lowers the attribute: the same figures
    assert falling["edit_success"] == 0.5 and falling["preservation"] is None


def test_options_are_checked_on_construction():
    with pytest.raises(DistillError, match="fp32 \\(required\\)"):
        EvaluateOptions(entry="e", out="o", variants=["int8"])
    with pytest.raises(FieldError, match="legacy_steps and timing_num >= 1") as e:  # the library names fields
        EvaluateOptions(entry="e", out="o", legacy_steps=0)
    assert e.value.as_flag().endswith("--legacy-steps and --timing-num >= 1")  # distill prints the flags


def test_brightness_edit_figures(setup, tmp_path):
    out = tmp_path / "bright"
    report, md = _evaluate(
        setup,
        "bright",
        out,
        "--scorer",
        str(setup["root"] / "scorer.onnx"),
        "--attribute",
        "brightness=0",
        "--other",
        "red_minus_green=1",
        "--dataset",
        str(setup["root"] / "pairs"),
    )  # the manifest keeps only its name
    seeds = list(range(report["seeds"]["start"], report["seeds"]["stop"]))
    assert len(seeds) == 6 and seeds[0] >= 1_000_000 and report["seeds"]["held_out_verified"]

    # Independent recomputation of the teacher's images and the scorer's brightness.
    G = setup["G"]
    with torch.no_grad():
        ws = G.mapping(z_from_seeds(seeds, G.z_dim), truncation_psi=TRUNCATION)
        edited = apply_direction(ws, setup["direction"], setup["alpha"], (0, 8))
        pics = to_uint8(G.synthesis(torch.cat([ws, edited]), noise_mode="const")).astype(np.float64)
    bright = pics.mean(axis=(1, 2, 3)) / 127.5 - 1
    student = np.clip(pics[:6] / 127.5 - 1 + BRIGHTEN, -1, 1)
    rise_t, rise_s = bright[6:] - bright[:6], student.mean(axis=(1, 2, 3)) - bright[:6]
    assert (rise_t > 0).all(), "the fitted brightness direction brightens every image"

    ed = report["edit"]
    assert ed["available"] and ed["direction"] == "rise"
    assert ed["paths"]["teacher"]["edit_success"] == 1.0
    assert ed["paths"]["teacher"]["mean_change"] == pytest.approx(rise_t.mean(), abs=2e-3)
    expected = ((rise_s >= 0.5 * rise_t) & (rise_t > 0)).mean()
    assert ed["paths"]["student_fp32"]["edit_success"] == pytest.approx(expected)
    assert ed["paths"]["student_fp32"]["mean_change"] == pytest.approx(rise_s.mean(), abs=5e-3)
    red_green = lambda x: x[..., 0].mean(axis=(1, 2)) - x[..., 1].mean(axis=(1, 2))  # noqa: E731
    # A constant added to every channel changes red minus green only where pixels clip at white.
    expected_change = np.abs(red_green(student) - red_green(pics[:6] / 127.5 - 1)).mean()
    assert ed["paths"]["student_fp32"]["preservation"] == pytest.approx(expected_change, abs=5e-3)
    assert ed["paths"]["teacher"]["preservation"] > 0  # the teacher's brightness edit also shifts colours
    assert ed["paths"]["legacy"]["n"] == 2 and ed["paths"]["teacher_on_legacy_seeds"]["n"] == 2
    assert (
        report["fidelity"]["legacy"]["psnr"]["n"] == 2 and report["fidelity"]["legacy"]["psnr"]["mean"] < 60
    )

    # The do-nothing baseline (the input unchanged) is reported beside every fidelity figure.
    size = tuple(report["entry"]["input_size"])

    def up(x: np.ndarray) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.fromarray(im.astype(np.uint8)).resize(size[::-1], Image.BICUBIC)) for im in x]
        )

    identity = psnr(from_uint8(up(pics[:6])), from_uint8(up(pics[6:])))
    assert report["fidelity"]["identity"]["psnr"]["mean"] == pytest.approx(float(identity.mean()), abs=1e-3)
    assert report["fidelity"]["identity_on_legacy_seeds"]["psnr"]["n"] == 2
    assert "do-nothing baseline" in md and _md_row(md, "identity (input unchanged: the do-nothing baseline)")[
        1
    ] == (f"{report['fidelity']['identity']['psnr']['mean']:.2f}")

    # per_image.csv holds the per-seed figures behind the aggregates.
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["seed"]) for r in rows] == seeds
    teacher_change = [float(r["teacher.brightness"]) - float(r["original.brightness"]) for r in rows]
    assert np.mean(teacher_change) == pytest.approx(ed["paths"]["teacher"]["mean_change"], abs=1e-4)
    assert [r["legacy.brightness"] != "" for r in rows] == [True, True, False, False, False, False]
    assert np.mean([float(r["psnr_fp32"]) for r in rows]) == pytest.approx(
        report["fidelity"]["student_fp32"]["psnr"]["mean"], abs=1e-3
    )

    # report.md shows report.json's figures.
    cells = _md_row(md, "student fp32")
    assert cells[:2] == ["6", f"{report['fidelity']['student_fp32']['psnr']['mean']:.2f}"]
    assert cells[5] == f"{report['fidelity']['student_fp32']['ssim']['mean']:.4f}"
    edit_cells = [
        c
        for c in md.split("## Edit success")[1].split("## Latency")[0].splitlines()
        if c.startswith("| student fp32 |")
    ]
    assert edit_cells[0].split("|")[3].strip() == f"{ed['paths']['student_fp32']['edit_success'] * 100:.1f}%"
    lat = report["latency"]
    assert lat["student_fp32"]["n"] == 6 and lat["student_int8"]["n"] == 6 and lat["legacy"]["n"] == 2
    assert report["speedup"]["legacy_vs_student_fp32"]["mean"] == pytest.approx(
        lat["legacy"]["mean_ms"] / lat["student_fp32"]["mean_ms"]
    )
    assert f"{report['speedup']['legacy_vs_student_fp32']['mean']:.1f}x" in md
    assert re.search(
        r"\| legacy projection \(5 steps\) \| 2 \| " + re.escape(f"{lat['legacy']['mean_ms']:.2f}"), md
    )
    assert "distill evaluate bright" in md and report["machine"]["cpu"] in md

    # grid.png: 4 seeds x (original, teacher edit, student fp32, student int8, legacy) tiles of 16 px, 2 px padding.
    assert Image.open(out / "grid.png").size == (5 * (RES + 2) + 2, 4 * (RES + 2) + 2)
    assert report["grid"]["columns"][-1] == "legacy"

    # A second run reuses the cached legacy projections instead of re-projecting.
    again, _ = _evaluate(setup, "bright", out)
    assert again["legacy"]["reused"] == 2
    assert again["fidelity"]["legacy"]["psnr"]["mean"] == pytest.approx(
        report["fidelity"]["legacy"]["psnr"]["mean"]
    )


def test_refusals(setup, tmp_path, capsys):
    base = [
        "evaluate",
        "bright",
        "--model-zoo",
        str(setup["zoo"]),
        "--out",
        str(tmp_path / "r"),
        "--legacy-num",
        "0",
        "--dataset",
        str(setup["root"] / "pairs"),
    ]
    assert main([*base, "--seeds", "5:20"]) == 2
    assert "made the student's training pairs" in capsys.readouterr().err
    assert main([*base, "--seeds", "100:103", "--scorer", str(setup["root"] / "scorer.onnx")]) == 2
    assert "--attribute NAME=INDEX" in capsys.readouterr().err
    assert main([*base, "--seeds", "100:103", "--variants", "int8"]) == 2
    assert main([*base, "--seeds", "100:103", "--clean-renders", "2", "--clean-age-change", "0.2"]) == 2
    assert "not a toy-face teacher" in capsys.readouterr().err
    assert main(["evaluate", "nope", "--model-zoo", str(setup["zoo"]), "--out", str(tmp_path / "n")]) == 2
    assert "available: bright, copy, identity" in capsys.readouterr().err

    # An entry without a teacher cannot be evaluated: the message says how to re-export it.
    entry = setup["zoo"] / "bright"
    manifest = json.loads((entry / "manifest.json").read_text())
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(entry / "model.onnx", bare / "model.onnx")
    manifest.update(teacher=None, direction=None, variants={"fp32": {"file": "model.onnx"}})
    write_entry(bare, manifest, ["model.onnx"])
    assert main(["evaluate", str(bare), "--out", str(tmp_path / "b")]) == 2
    assert "has no teacher and direction" in capsys.readouterr().err


def test_artifact_figures_and_pictures(setup, tmp_path):
    """The artifacts block beside the teacher's edit and the identity, its pictures; with a teacher tagged as a toy-face
    teacher, the same in the hair of clean renders against the renderer's true edit."""
    zoo = tmp_path / "zoo"
    entry = zoo / "toy"
    shutil.copytree(setup["zoo"] / "bright", entry)
    save_generator(setup["G"], entry / "teacher.pt", extra={"toyfaces": {"config": {"aligned": True}}})
    manifest = json.loads((entry / "manifest.json").read_text())
    write_entry(
        entry, {**manifest, "name": "toy"}, ["model.onnx", "model.int8.onnx", "teacher.pt", "direction.npy"]
    )
    out = tmp_path / "toy-report"
    assert (
        main(
            [
                "evaluate",
                "toy",
                "--model-zoo",
                str(zoo),
                "--out",
                str(out),
                "--num",
                "5",
                "--legacy-num",
                "0",
                "--timing-num",
                "2",
                "--dataset",
                str(setup["root"] / "pairs"),
                "--clean-renders",
                "3",
                "--clean-legacy-num",
                "0",
                "--clean-age-change",
                "0.2",
            ]
        )
        == 0
    )
    report, md = json.loads((out / "report.json").read_text()), (out / "report.md").read_text()

    art = report["artifacts"]
    assert art["n"] == 5 and art["reference"] == "teacher" and 0 < art["region_share"] <= 1
    assert set(art["paths"]) == {"teacher", "identity", "student_fp32", "student_int8"}
    teacher, student = art["paths"]["teacher"], art["paths"]["student_fp32"]
    assert teacher["hf_energy"] > 0 and teacher["error_peak"] == 0
    # The student adds a constant: where nothing clips its Laplacian is the teacher's input's, so the figures stay close.
    assert (
        0 < student["hf_energy"] < 1e5
        and student["error_peak"] > 0
        and art["paths"]["identity"]["error_peak"] > 0
    )
    ratio = art["ratio_to_reference"]["student_fp32"]
    assert ratio["hf_energy"] == pytest.approx(student["hf_energy"] / teacher["hf_energy"], rel=1e-2)
    assert art["maps"]["scale_levels"] == [0, 32.0] and art["zoom"]["factor"] == 4
    maps, zoom = Image.open(out / "artifact_maps.png"), Image.open(out / "zoom_grid.png")
    assert (
        maps.size[1] > 2 * 256 and zoom.size[0] > 4 * art["zoom"]["crop"]["w"] * 4
    )  # 2 variants; 4 columns at 4x
    assert (
        "## Artifacts against the teacher's edit" in md
        and "(artifact_maps.png)" in md
        and "(zoom_grid.png)" in md
    )
    assert _md_row(md, "teacher edit (reference)")[0] == f"{teacher['hf_energy']:.1f}"

    clean = report["clean_renders"]["artifacts"]
    assert (
        clean["n"] == 3 and clean["reference"] == "true_edit" and 0 < clean["region_share"] < 0.7
    )  # the hair
    assert set(clean["paths"]) == {"true_edit", "identity", "student_fp32", "student_int8"}
    assert (
        clean["paths"]["true_edit"]["hf_energy_region"] > 0 and clean["paths"]["true_edit"]["error_peak"] == 0
    )
    assert (
        clean["teacher_samples"]["n"] == 5
        and clean["ratio_to_teacher_samples"]["student_fp32"]["blemish_peak"] > 0
    )
    assert (out / "clean_artifact_maps.png").is_file() and (out / "clean_zoom_grid.png").is_file()
    assert clean["zoom"]["columns"] == ["student fp32", "student int8", "true edit (renderer)", "input"]
    assert "### Artifacts in the hair against the true edit" in md and "(clean_zoom_grid.png)" in md
    assert report["clean_renders"]["paths"]["student_fp32"]["psnr"]["n"] == 3  # the existing keys are kept
