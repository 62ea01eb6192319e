"""The toyfaces-age recipe on its tiny setting: every stage runs, the entry loads, a re-run resumes, reports are real."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from core.errors import DistillError
from core.hashing import sha256_file
from core.runfiles import CHECKPOINT
from distill.cli import main
from model_zoo.registry import get_entry
from training.toyfaces.attributes import default_path
from training.toyfaces.recipe import SETTINGS, Recipe
from training.toyfaces.teacher_report import evaluate_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STAGES = ["teacher", "direction", "pairs", "filter", "student", "export", "teacher-report", "evaluate"]


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("recipe")
    argv = [
        "toyfaces",
        "recipe",
        "--setting",
        "tiny",
        "--out",
        str(out),
        "--model-zoo",
        str(out / "zoo"),
        "--attribute-model",
        str(default_path()),
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    return out, argv


def test_every_stage_runs_and_the_entry_loads(tiny_recipe):
    out, _ = tiny_recipe
    log = json.loads((out / "recipe.json").read_text())
    assert [r["stage"] for r in log["stages"]] == STAGES
    assert all(r["seconds"] >= 0 for r in log["stages"])
    calls = {
        r["stage"]: r["call"] for r in log["stages"] if "call" in r
    }  # the pipeline's stages, as functions
    assert calls == {
        "direction": "training.directions.run_fit",
        "pairs": "training.pairs.make_pairs",
        "filter": "training.filters.run_filter",
        "student": "training.trainer.train",
        "export": "training.export.export_entry",
        "evaluate": "training.evaluate.evaluate",
    }
    assert all(r["command"].startswith("distill ") for r in log["stages"] if r["stage"] not in calls)
    assert next(r for r in log["stages"] if r["stage"] == "pairs")["options"]["layers"] == [0, 8]
    entry = get_entry("toyfaces-age-tiny", root=out / "zoo")
    assert entry.teacher_path is not None and entry.direction_path is not None
    assert sorted(entry.variants) == ["fp32", "int8"]
    assert list((entry.path / "samples").glob("*.png"))
    assert (entry.path / "filter_report.md").is_file()


def test_reports_hold_measured_figures(tiny_recipe):
    out, _ = tiny_recipe
    entry = out / "zoo" / "toyfaces-age-tiny"
    teacher = json.loads((entry / "teacher_report" / "report.json").read_text())
    assert teacher["num"] == 16 and len(teacher["edit"]["sweep"]) == 5
    assert teacher["edit"]["sweep"][0]["alpha"] == 0 and teacher["edit"]["sweep"][0]["change"]["age"] == 0
    assert 0 <= teacher["quality"]["render_pass_rate"] <= 1
    assert set(teacher["readability"]["teacher"]["mae"]) == set(teacher["readability"]["render"]["mae"])
    assert "(edit.png)" in (entry / "teacher_report" / "report.md").read_text()
    report = json.loads((entry / "evaluation" / "report.json").read_text())
    assert (entry / "evaluation" / "report.md").is_file() and (entry / "evaluation" / "grid.png").is_file()
    assert report["seeds"]["count"] == 6 and {"student_fp32", "student_int8", "legacy", "identity"} <= set(
        report["fidelity"]
    )
    clean = report["clean_renders"]
    assert clean["n"] == 4 and clean["age_change"] == 0.3 and clean["aligned"]
    assert {"identity", "student_fp32", "student_int8", "legacy"} <= set(clean["paths"])
    assert (
        0 <= clean["paths"]["student_fp32"]["beats_identity"] <= 1
        and clean["age_judge"]["student_fp32"]["n"] == 4
    )
    assert (
        "## Clean renders against the renderer's true edit"
        in (entry / "evaluation" / "report.md").read_text()
    )
    assert (entry / "evaluation" / "clean_grid.png").is_file()
    fid = teacher["psnr_teacher_vs_render"]
    assert set(fid["regions"]) == {"eyes", "mouth"} and fid["best_fit_blur"]["sigma"] in [
        row["sigma"] for row in fid["best_fit_blur"]["curve"]
    ]
    assert sorted(p.name for p in (entry / "samples").glob("render-*.png")) == [
        "render-4000000.png",
        "render-4000001.png",
    ]


def test_rerun_skips_finished_stages_and_keeps_their_times(tiny_recipe, capsys):
    out, argv = tiny_recipe
    before = json.loads((out / "recipe.json").read_text())
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "[export] done already" in text and "[evaluate] done already" in text
    assert "already at step" in text  # the teacher is resumed, not retrained
    after = json.loads((out / "recipe.json").read_text())
    assert after["seconds_total"] >= before["seconds_total"] > 0


def test_teacher_report_reads_renders_as_well_as_the_model_card_says(tiny_recipe):
    out, _ = tiny_recipe
    report, grids = evaluate_teacher(
        out / "teacher" / "teacher.pt", out / "age.npy", default_path(), num=32, steps=2
    )
    assert (
        report["readability"]["render"]["mae"]["age"] < 0.12
    )  # held-out card: 0.061 on 1000 faces at 128 px
    assert [row["alpha"] for row in report["edit"]["sweep"]] == pytest.approx(
        [0, report["edit"]["alpha"] / 2, report["edit"]["alpha"]]
    )
    assert (
        grids["edit"].shape == (6 * 34 + 2, 3 * 34 + 2, 3) and grids["edit"].dtype == np.uint8
    )  # 6 seeds x 3 alphas, 32 px + 2 px pad


def test_missing_attribute_model_and_alpha_are_clear_errors(tmp_path, tiny_recipe, capsys):
    out, _ = tiny_recipe
    assert (
        main(
            [
                "toyfaces",
                "recipe",
                "--setting",
                "tiny",
                "--out",
                str(tmp_path),
                "--attribute-model",
                str(tmp_path / "no.onnx"),
            ]
        )
        != 0
    )
    assert "no.onnx: not found; omit it to train one" in capsys.readouterr().err
    bare = tmp_path / "bare.npy"
    np.save(bare, np.load(out / "age.npy"))
    with pytest.raises(DistillError, match="pass --alpha"):
        evaluate_teacher(out / "teacher" / "teacher.pt", bare, default_path(), num=4)


def test_more_student_steps_resume_the_student_and_export_it_again(tiny_recipe, capsys):
    out, argv = tiny_recipe
    before = get_entry("toyfaces-age-tiny", root=out / "zoo").spec.training
    assert main([*argv, "--student-steps", "6"]) == 0
    text = capsys.readouterr().out
    assert (
        "[export] training.export.export_entry(" in text and "[evaluate] training.evaluate.evaluate(" in text
    )
    after = get_entry("toyfaces-age-tiny", root=out / "zoo").spec.training
    assert after.global_step == 6 > before.global_step
    assert after.checkpoint_sha256 == sha256_file(out / "student" / CHECKPOINT) != before.checkpoint_sha256
    assert main([*argv, "--student-steps", "6"]) == 0  # the student is saved again, but at the same step
    assert "[export] done already" in capsys.readouterr().out


def test_a_teacher_trained_further_makes_the_direction_stale_until_redo_from(tiny_recipe, capsys):
    out, argv = tiny_recipe
    assert main([*argv, "--teacher-steps", "5"]) != 0
    err = capsys.readouterr().err
    assert "fitted on an earlier state" in err and "--redo-from direction" in err
    assert main([*argv, "--teacher-steps", "5", "--redo-from", "direction"]) == 0
    text = capsys.readouterr().out
    assert (
        "removing" in text
        and "[export] training.export.export_entry(" in text
        and "[evaluate] training.evaluate.evaluate(" in text
    )
    teacher_sha = json.loads((out / "age.json").read_text())["generator"]["sha256"]
    assert teacher_sha in (out / "pairs" / "dataset.json").read_text()
    assert (
        json.loads((out / "zoo" / "toyfaces-age-tiny" / "teacher_report" / "report.json").read_text())[
            "generator_sha256"
        ]
        == teacher_sha
    )


def test_a_new_teacher_run_can_warm_start_from_an_earlier_teacher(tiny_recipe, tmp_path):
    out, _ = tiny_recipe
    earlier = out / "teacher" / "teacher.pt"
    setting = replace(SETTINGS["tiny"], teacher_init=str(earlier), teacher_steps=1)
    recipe = Recipe(setting, tmp_path / "r", tmp_path / "zoo", default_path(), threads=1)
    recipe.train_teacher()
    assert f"--init {earlier}" in recipe.log[-1]["command"]
    run = json.loads((tmp_path / "r" / "teacher" / "run.json").read_text())
    assert run["config"]["init"] == str(earlier) and run["config"]["aligned"]
