"""`distill evaluate`: how close a distilled student comes to its teacher's edit, and how much faster it is.

For held-out teacher seeds (never used to make the student's training pairs) it renders the teacher's
original and edited image (seed -> z exactly as `distill pairs` does, the entry's truncation,
direction, alpha and W+ layers), runs the student on the original through ONNX Runtime on the CPU
(fp32 and every requested variant present in the entry; at the entry's native size, the teacher
image resized when the sizes differ) and, on the first ``--legacy-num`` seeds, the legacy path the
student replaces (project the original into W, add the direction, synthesize).

Figures (REPORT_DIR/report.json, rendered in REPORT_DIR/report.md with image grids):

- fidelity: PSNR and SSIM of each path's output against the teacher's edited image (mean, p10/p50/p90);
- with an attribute scorer (any ONNX regressor, as `distill filter` takes): *edit success*, the share of
  images on which the attribute moves (in the direction the teacher moves it on average) by at least
  half the teacher's own change on that image, and *preservation*, the mean absolute change of the other
  attributes between the original and the output; the teacher itself is the reference row;
- latency per image, measured in the same run on this machine: every ONNX Runtime variant (batch 1)
  and the legacy projection with its step count, and the speedups.

REPORT_DIR/per_image.csv holds the figures behind every aggregate, one line per seed: ``psnr_<path>``,
``ssim_<path>``, ``seconds_legacy`` and the scorer's outputs as ``<path>.<name>`` (``original.age``,
``teacher.age``, ``fp32.age``, ``legacy.age``, ...).

Images compared are what a user gets: uint8 pictures, the student fed the uint8 original. An output
identical to the teacher's edit scores 126.02 dB (the PSNR floor of metrics.psnr's mse clamp).
Legacy outputs are cached per seed in REPORT_DIR/legacy/ with their timing, so an interrupted run
resumes without re-projecting (the report says how many were reused).

A student of several edits (strength [N, K]) is measured per strength vector instead: each edit alone over its
range and each pair of edits together, every attribute's change (its own and the others': the leak) against the
teacher's edit, the identity and, with ``--clean-renders``, the renderer's true edit (training/evaluate/edits.py).

With ``--photos DIR`` the student (through the service's face path, pasted back) and the legacy path are
also measured on photographs, by dlib's face descriptor (identity distance, same person) and the scorer:
REPORT_DIR/photos.md, photos.json, photos_grid.png (training/evaluate/photos.py); ``--photos-only`` skips
the seeds.
"""

from __future__ import annotations

import platform
import shlex
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm import tqdm

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import DistillError, FieldError
from editing.alignment.edited import PhotoEditor
from editing.directions import load_direction
from editing.images import from_uint8
from model_zoo.registry import MANIFEST, ModelEntry
from training.artifacts import (
    ARTIFACT_FACES,
)
from training.devices import exact_float32, pick_device
from training.directions import file_sha256
from training.evaluate.clean import evaluate_clean_renders, teacher_artifacts
from training.evaluate.edits import edits_markdown, evaluate_edits
from training.evaluate.inputs import (
    BATCH,
    GRID_ROWS,
    SUCCESS_FRACTION,
    EditSpec,
    EvaluateOptions,
    Scoring,
    build_scoring,
    choose_seeds,
    dataset_seeds,
    edit_figures,
    edit_spec,
    latency,
    resolve_entry,
    spread,
)
from training.evaluate.paths import (
    Student,
    engine_latency,
    legacy_outputs,
    resize,
    seed_name,
    teacher_pairs,
    time_students,
)
from training.evaluate.photos import (
    PHOTOS_TEACHER_SEEDS,
    evaluate_photos,
    photo_inputs,
    teacher_mean_change,
    write_photos_markdown,
)
from training.evaluate.report import per_image_csv, render_markdown, write_grid
from training.evaluate.strength import default_strengths, evaluate_strengths
from training.metrics import psnr, ssim
from training.variants import cpu_description


def evaluate(opts: EvaluateOptions, photo_editor: PhotoEditor | None = None) -> dict[str, Any]:
    """Run the evaluation ``opts`` describes; write its report folder and return the report dict (with
    ``photos_only``, the photos section's: :class:`PhotosReport` as a dict). ``opts.photos`` needs
    ``photo_editor``, the service's face path (``distill evaluate`` passes app.offline.edit_photos)."""
    from networks.stylegan2 import load_generator

    if opts.photos and photo_editor is None:
        raise ValueError("--photos needs the service's face path: call evaluate() with a photo_editor")
    if opts.photos_only:
        assert photo_editor is not None
        return evaluate_photos_only(opts, photo_editor)
    photos_in = photo_inputs(opts.photos) if opts.photos else None  # checked before any work
    entry = resolve_entry(opts.entry, opts.model_zoo)
    if len(entry.spec.edits) > 1:
        if photos_in:
            raise FieldError("photos", f"{entry.name} has several edits; --photos measures a one-edit model")
        return evaluate_multi_edit(opts, entry)
    spec = edit_spec(entry, opts.truncation)
    trained, trained_source = dataset_seeds(entry, opts.dataset)
    seeds = choose_seeds(opts.seeds, opts.num, trained)
    present = [v for v in opts.variants if v in entry.manifest["variants"]]
    missing = [v for v in opts.variants if v not in present]
    scoring = build_scoring(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)

    device = pick_device(opts.device)
    exact_float32()
    G = load_generator(spec.teacher, device=device)
    direction = load_direction(spec.direction, G.num_ws, G.w_dim).to(device)
    size = entry.input_size
    students = [Student(v, entry.variant_path(v), opts.threads) for v in present]

    legacy_num = min(opts.legacy_num, len(seeds))
    grid_rows = min(GRID_ROWS, len(seeds))
    keep_first = max(
        grid_rows, legacy_num
    )  # originals, edits and outputs kept for the grid and the legacy path
    timing_inputs: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    kept_orig, kept_edit, kept_student = [], [], {v: [] for v in present}
    art_inputs, art_edits, art_student = [], [], {v: [] for v in present}  # the artifact figures' first faces
    scores: dict[str, list[dict[str, float]]] = {k: [] for k in ["original", "teacher", *present]}
    bar = tqdm(total=len(seeds), desc="teacher + student", unit="img")
    for i in range(0, len(seeds), BATCH):
        batch = seeds[i : i + BATCH]
        originals, edits = teacher_pairs(G, direction, spec, batch)
        inputs = [resize(im, size) for im in originals]
        edits_sized = [resize(im, size) for im in edits]
        targets = torch.cat([from_uint8(im) for im in edits_sized])
        batch_rows = [{"seed": s} for s in batch]
        same = torch.cat([from_uint8(x) for x in inputs])
        for row, p, q in zip(
            batch_rows, psnr(same, targets).tolist(), ssim(same, targets).tolist(), strict=True
        ):
            row["psnr_identity"], row["ssim_identity"] = p, q
        for s in students:
            outputs = [s(x) for x in inputs]
            t = torch.cat([from_uint8(o) for o in outputs])
            for row, p, q in zip(
                batch_rows, psnr(t, targets).tolist(), ssim(t, targets).tolist(), strict=True
            ):
                row[f"psnr_{s.variant}"], row[f"ssim_{s.variant}"] = p, q
            if scoring:
                scores[s.variant] += scoring.score(outputs)
            kept_student[s.variant] += outputs[: max(0, keep_first - i)]
            art_student[s.variant] += outputs[: max(0, ARTIFACT_FACES - i)]
        if scoring:
            scores["original"] += scoring.score(originals)
            scores["teacher"] += scoring.score(edits)
        kept_orig += list(originals[: max(0, keep_first - i)])
        kept_edit += list(edits[: max(0, keep_first - i)])
        art_inputs += inputs[: max(0, ARTIFACT_FACES - i)]
        art_edits += edits_sized[: max(0, ARTIFACT_FACES - i)]
        timing_inputs += inputs[: max(0, opts.timing_num - i)]
        rows += batch_rows
        bar.update(len(batch))
    bar.close()
    time_students(students, timing_inputs)

    legacy: dict[str, Any] | None = None
    legacy_images: list[np.ndarray] = []
    if legacy_num:
        legacy_images, seconds, reused = legacy_outputs(
            G,
            direction,
            spec,
            [seed_name(s) for s in seeds[:legacy_num]],
            kept_orig[:legacy_num],
            opts.legacy_steps,
            opts.vgg16,
            out / "legacy",
        )
        t = torch.cat([from_uint8(o) for o in legacy_images])
        targets = torch.cat([from_uint8(e) for e in kept_edit[:legacy_num]])
        for row, p, q, sec in zip(
            rows, psnr(t, targets).tolist(), ssim(t, targets).tolist(), seconds, strict=False
        ):
            row["psnr_legacy"], row["ssim_legacy"], row["seconds_legacy"] = p, q, sec
        if scoring:
            scores["legacy"] = scoring.score(legacy_images)
        legacy = {
            "n": legacy_num,
            "steps": opts.legacy_steps,
            "seconds": seconds,
            "reused": reused,
            "distance": "VGG16 perceptual" if opts.vgg16 else "pyramid pixel (no --vgg16 weights)",
        }

    if scoring:
        for name, per_image in scores.items():
            for row, record in zip(rows, per_image, strict=False):
                for key, value in record.items():
                    row[f"{name}.{key}"] = value

    report = build_report(
        opts,
        entry,
        spec,
        G,
        seeds,
        trained,
        trained_source,
        present,
        missing,
        rows,
        scoring,
        students,
        legacy,
    )
    report["artifacts"] = teacher_artifacts(
        out, np.stack(art_inputs), np.stack(art_edits), {v: np.stack(o) for v, o in art_student.items()}
    )
    if opts.clean_renders:
        change = report["edit"].get("teacher_mean_change") if report["edit"]["available"] else None
        report["clean_renders"] = evaluate_clean_renders(
            opts,
            G,
            direction,
            spec,
            students,
            scoring,
            size,
            change,
            out,
            (seeds[: len(art_edits)], np.stack(art_edits)),
        )
    if entry.spec.strength is not None:
        trained = entry.spec.strength.range
        report["strengths"] = evaluate_strengths(
            G,
            direction,
            spec,
            students,
            scoring,
            size,
            seeds[: max(1, opts.strength_num)],
            opts.strengths or default_strengths(trained),
            trained,
            out,
        )
    if photos_in:
        assert photo_editor is not None
        change = report["edit"].get("teacher_mean_change") if report["edit"]["available"] else None
        photos = evaluate_photos(
            opts, photos_in, entry, spec, G, direction, scoring, change, out, photo_editor
        )
        write_photos_markdown(out, photos, entry, report["command"])
        report["photos"] = photos.model_dump()
    report["engines"] = engine_latency(entry, present, timing_inputs, opts.threads)
    report["grid"] = write_grid(out, seeds[:grid_rows], kept_orig, kept_edit, kept_student, legacy_images)
    atomic_write_text(out / "per_image.csv", per_image_csv(rows))
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def evaluate_multi_edit(opts: EvaluateOptions, entry: ModelEntry) -> dict[str, Any]:
    """A student of several edits: each alone and in pairs, against the teacher, the identity and (toy domain) the
    renderer's true edit (training/evaluate/edits.py), its latency and its engines; report.json and report.md."""
    if entry.teacher_path is None:
        raise DistillError(
            f"{entry.path / MANIFEST}: model {entry.name!r} ships no teacher; nothing to compare with"
        )
    trained, trained_source = dataset_seeds(entry, opts.dataset)
    seeds = choose_seeds(opts.seeds, opts.num, trained)
    present = [v for v in opts.variants if v in entry.manifest["variants"]]
    scoring = build_scoring(opts)
    out, G = _prepare(opts, entry.teacher_path)
    students = [Student(v, entry.variant_path(v), opts.threads) for v in present]
    section, inputs = evaluate_edits(opts, entry, G, students, scoring, seeds, out)
    timing_inputs = inputs[: opts.timing_num]
    time_students(students, timing_inputs)
    missing = [v for v in opts.variants if v not in present]
    report = {
        **report_header(opts, entry, G, present, missing),
        "teacher": {"file": str(entry.teacher_path), "sha256": file_sha256(entry.teacher_path)},
        "seeds": {
            "start": seeds[0],
            "stop": seeds[-1] + 1,
            "count": len(seeds),
            "training_seeds_source": trained_source,
            "held_out_verified": trained is not None,
        },
        "edits": section,
        "latency": {f"student_{s.variant}": latency(s.seconds) for s in students},
        "engines": engine_latency(entry, present, timing_inputs, opts.threads),
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", edits_markdown(report))
    return report


def evaluate_photos_only(opts: EvaluateOptions, photo_editor: PhotoEditor) -> dict[str, Any]:
    """The photos section alone (``--photos-only``): photos.json, photos.md, photos_grid.png; with a scorer, the
    teacher's mean change is read on ``opts.num`` held-out seeds (default :data:`PHOTOS_TEACHER_SEEDS`)."""
    assert opts.photos is not None
    photos_in = photo_inputs(opts.photos)  # checked before any work
    entry = resolve_entry(opts.entry, opts.model_zoo)
    spec = edit_spec(entry, opts.truncation)
    scoring = build_scoring(opts)
    out, G = _prepare(opts, spec.teacher)
    direction = load_direction(spec.direction, G.num_ws, G.w_dim).to(G.w_avg.device)
    change = None
    if scoring:
        trained, _ = dataset_seeds(entry, opts.dataset)
        seeds = choose_seeds(opts.seeds, opts.num or PHOTOS_TEACHER_SEEDS, trained)
        change = teacher_mean_change(G, direction, spec, scoring, seeds)
    photos = evaluate_photos(opts, photos_in, entry, spec, G, direction, scoring, change, out, photo_editor)
    write_photos_markdown(out, photos, entry, command_line(opts))
    return photos.model_dump()


def build_report(
    opts: EvaluateOptions,
    entry: ModelEntry,
    spec: EditSpec,
    G: torch.nn.Module,
    seeds: list[int],
    trained: list[int] | None,
    trained_source: str,
    present: list[str],
    missing: list[str],
    rows: list[dict[str, Any]],
    scoring: Scoring | None,
    students: list[Student],
    legacy: dict[str, Any] | None,
) -> dict[str, Any]:
    """Every figure of the report, computed from the per-image rows."""
    legacy_n = legacy["n"] if legacy else 0
    fidelity: dict[str, Any] = {}
    for v in present:
        fidelity[f"student_{v}"] = {
            "psnr": spread([r[f"psnr_{v}"] for r in rows]),
            "ssim": spread([r[f"ssim_{v}"] for r in rows]),
        }
    fidelity["identity"] = {
        "psnr": spread([r["psnr_identity"] for r in rows]),
        "ssim": spread([r["ssim_identity"] for r in rows]),
    }
    if legacy:
        sub = rows[:legacy_n]
        fidelity["legacy"] = {
            "psnr": spread([r["psnr_legacy"] for r in sub]),
            "ssim": spread([r["ssim_legacy"] for r in sub]),
        }
        fidelity["student_fp32_on_legacy_seeds"] = {
            "psnr": spread([r["psnr_fp32"] for r in sub]),
            "ssim": spread([r["ssim_fp32"] for r in sub]),
        }
        fidelity["identity_on_legacy_seeds"] = {
            "psnr": spread([r["psnr_identity"] for r in sub]),
            "ssim": spread([r["ssim_identity"] for r in sub]),
        }

    edit: dict[str, Any] = {
        "available": False,
        "note": "edit success and preservation need an attribute scorer: pass --scorer MODEL.onnx "
        "--attribute NAME=INDEX [--other NAME=INDEX ...]",
    }
    if scoring:
        a = scoring.attribute

        def col(name: str, key: str, n: int | None = None) -> np.ndarray:
            return np.asarray([r[f"{name}.{key}"] for r in rows[:n]], dtype=np.float64)

        mean_teacher_change = float((col("teacher", a) - col("original", a)).mean())
        sign = -1.0 if mean_teacher_change < 0 else 1.0

        def figures(name: str, n: int | None = None) -> dict[str, Any]:
            others = {o: (col("original", o, n), col(name, o, n)) for o in scoring.others}
            return edit_figures(col("original", a, n), col("teacher", a, n), col(name, a, n), sign, others)

        paths = {"teacher": figures("teacher"), **{f"student_{v}": figures(v) for v in present}}
        if legacy:
            paths["teacher_on_legacy_seeds"] = figures("teacher", legacy_n)
            paths["legacy"] = figures("legacy", legacy_n)
            paths["student_fp32_on_legacy_seeds"] = figures("fp32", legacy_n)
        edit = {
            "available": True,
            "attribute": a,
            "others": scoring.others,
            "direction": "rise" if sign > 0 else "fall",
            "teacher_mean_change": mean_teacher_change,
            "success_fraction": SUCCESS_FRACTION,
            "paths": paths,
            "scorer": {
                "file": str(scoring.path),
                "sha256": file_sha256(scoring.path),
                "outputs": scoring.scorer.outputs,
                "input_size": list(scoring.scorer.input_size),
                "mean": scoring.scorer.mean.reshape(-1).tolist(),
                "std": scoring.scorer.std.reshape(-1).tolist(),
                "activation": scoring.scorer.activation,
            },
        }

    timing: dict[str, Any] = {f"student_{s.variant}": latency(s.seconds) for s in students}
    speedup: dict[str, dict[str, float]] = {}
    if legacy:
        timing["legacy"] = {
            **latency(legacy["seconds"]),
            "steps": legacy["steps"],
            "reused_from_cache": legacy["reused"],
        }
        for s in students:
            speedup[f"legacy_vs_student_{s.variant}"] = _ratios(
                timing["legacy"], timing[f"student_{s.variant}"]
            )
    if "int8" in present:
        speedup["student_fp32_vs_student_int8"] = _ratios(timing["student_fp32"], timing["student_int8"])

    return {
        **report_header(opts, entry, G, present, missing),
        "teacher": {
            "file": str(spec.teacher),
            "sha256": file_sha256(spec.teacher),
            "resolution": int(G.img_resolution),
            "truncation": spec.truncation,
            "noise_mode": "const",
        },
        "direction": {
            "file": str(spec.direction),
            "attribute": spec.attribute,
            "alpha": spec.alpha,
            "layers": list(spec.layers),
            "normalize": spec.normalize,
        },
        "seeds": {
            "start": seeds[0],
            "stop": seeds[-1] + 1,
            "count": len(seeds),
            "seed_to_z": "torch.randn(z_dim, generator=torch.Generator('cpu').manual_seed(seed))",
            "training_seeds": None
            if trained is None
            else {"min": trained[0], "max": trained[-1], "count": len(trained)},
            "training_seeds_source": trained_source,
            "held_out_verified": trained is not None,
        },
        "legacy": None if not legacy else {k: legacy[k] for k in ("n", "steps", "reused", "distance")},
        "fidelity": fidelity,
        "edit": edit,
        "latency": timing,
        "speedup": speedup,
    }


def _prepare(opts: EvaluateOptions, teacher: Path) -> tuple[Path, torch.nn.Module]:
    """The report folder (created), the threads and exact float32 set, and the teacher loaded."""
    from networks.stylegan2 import load_generator

    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    exact_float32()
    return out, load_generator(teacher, device=pick_device(opts.device))


def report_header(
    opts: EvaluateOptions, entry: ModelEntry, G: torch.nn.Module, present: list[str], missing: list[str]
) -> dict[str, Any]:
    """What every report starts with: its format, the command, when, where, and the entry evaluated."""
    return {
        "format": "distill-evaluation/1",
        "command": command_line(opts),
        "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine_record(opts, G),
        "entry": {
            "name": entry.name,
            "path": str(entry.path),
            "description": entry.manifest.get("description"),
            "input_size": list(entry.input_size),
            "variants_evaluated": present,
            "variants_missing": missing,
        },
    }


def machine_record(opts: EvaluateOptions, G: torch.nn.Module) -> dict[str, Any]:
    """Where the figures were measured: CPU, library versions, threads."""
    return {
        "cpu": cpu_description(),
        "platform": platform.platform(),
        "ort_threads": opts.threads or "default",
        "torch_threads": torch.get_num_threads(),
        "torch_device": _device_name(G.w_avg.device),
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "provider": "CPUExecutionProvider",
    }


def _device_name(device: torch.device) -> str:
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


def _ratios(slow: dict[str, float], fast: dict[str, float]) -> dict[str, float]:
    return {"mean": slow["mean_ms"] / fast["mean_ms"], "p50": slow["p50_ms"] / fast["p50_ms"]}


def command_line(opts: EvaluateOptions) -> str:
    """The command that reproduces this report, every option spelled out."""
    argv = ["distill", "evaluate", opts.entry, "--out", str(opts.out)]
    if opts.model_zoo:
        argv += ["--model-zoo", opts.model_zoo]
    if opts.dataset:
        argv += ["--dataset", opts.dataset]
    if opts.seeds:
        argv += ["--seeds", f"{opts.seeds[0]}:{opts.seeds[1]}"]
    if opts.num is not None:
        argv += ["--num", str(opts.num)]
    if opts.truncation is not None:
        argv += ["--truncation", str(opts.truncation)]
    if opts.scorer:
        argv += ["--scorer", opts.scorer, "--attribute", opts.attribute]
        for o in opts.other:
            argv += ["--other", o]
        if opts.input_size:
            size = opts.input_size
            argv += ["--input-size", str(size) if isinstance(size, int) else f"{size[0]}x{size[1]}"]
        argv += [
            "--mean",
            *map(str, opts.mean),
            "--std",
            *map(str, opts.std),
            "--activation",
            opts.activation,
        ]
    if not opts.photos_only:  # the seed evaluation's own flags
        argv += ["--legacy-num", str(opts.legacy_num)]
    argv += ["--legacy-steps", str(opts.legacy_steps)]
    if not opts.photos_only:
        argv += ["--variants", ",".join(opts.variants), "--timing-num", str(opts.timing_num)]
    if opts.clean_renders and not opts.photos_only:
        argv += ["--clean-renders", str(opts.clean_renders), "--clean-legacy-num", str(opts.clean_legacy_num)]
        if opts.clean_age_change is not None:
            argv += ["--clean-age-change", str(opts.clean_age_change)]
    if opts.photos:
        argv += ["--photos", str(opts.photos), "--photos-legacy-num", str(opts.photos_legacy_num)]
        if opts.photos_only:
            argv += ["--photos-only"]
    if opts.vgg16:
        argv += ["--vgg16", opts.vgg16]
    if opts.threads:
        argv += ["--threads", str(opts.threads)]
    if opts.device != "cpu":
        argv += ["--device", opts.device]
    return shlex.join(argv)
