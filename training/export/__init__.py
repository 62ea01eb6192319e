"""`distill export`: a trained Pix2PixHD student -> ONNX (+ fp16/int8 variants) -> a model-zoo entry.

The ONNX graph takes ``input`` [N,3,H,W] float32 in [-1,1] and returns ``output`` of the same shape,
with batch, height and width dynamic (H and W multiples of the generator's stride). Every export is
checked against PyTorch on fresh random inputs at two sizes (one non-square) and batch 2; the max
abs difference goes into the manifest and an export above 1e-3 fails.

A strength-conditioned student (``--condition``) takes a second input, ``strength`` [N] float32
(relative: 1.0 = the edit's alpha); the manifest's ``strength`` records its trained range (the pair
dataset's ``alpha_range``) and default, and parity, variants' calibration and error use strengths over it.
A student of K edits (trained on multi-edit pairs) takes ``strength`` [N, K] in the order of the manifest's
``edits`` (dataset.json's: attribute, direction file copied into the entry, alpha, layers, the trained range
with 0, default 0); its parity, strength-0 exactness and variants use strength vectors drawn in those ranges.

The entry is assembled in a staging folder beside ``--out`` and moved into place at the end, so an
interrupted export never leaves a half-written entry (re-run the same command to start over), and a
re-export replaces the old entry in one rename.

When the pairs carry a filter report, the keep ranges that defined the student's inputs and their scorer go
into the entry (manifest ``domain``, see :mod:`training.export.domain`): the service checks inputs against them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DistillError
from model_zoo.registry import (
    _NAME_RE,
    MANIFEST,
    ModelEntry,
    file_records,
    write_entry,
    zoo_roots,
)
from model_zoo.schema import EntryManifest, FileRecord, dataset_provenance
from networks.pix2pixhd.conditional import edit_count, is_conditional
from training.export.assets import _copy_samples, _teacher_and_direction, _write_preview
from training.export.domain import FILTER_REPORT, copy_domain
from training.export.graph import (
    StudentSource,
    check_parity,
    export_onnx,
    load_source,
    parity_sizes,
    versions,
)
from training.export.options import ExportOptions
from training.export.records import DataViews, _data_views, _native_size, _run_dataset, _training_record
from training.manifest import METADATA, read_metadata
from training.variants import (
    VARIANT_FILES,
    VARIANT_PROVIDERS,
    VariantRefused,
    build_variant,
    timing_record,
)


def export_entry(opts: ExportOptions) -> ModelEntry:
    """Run the whole export ``opts`` describes; returns the written entry."""
    out = Path(opts.out)
    name = opts.name or out.name
    if not _NAME_RE.match(name) or not _NAME_RE.match(out.name):
        raise DistillError(f"--out {out}: entry names use letters, digits, '.', '_', '-' (got {out.name!r})")
    if out.exists() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise DistillError(f"--out {out}: exists and is not a model-zoo entry; choose another folder")
    if (out / MANIFEST).is_file() and not opts.overwrite:
        raise DistillError(f"--out {out}: an entry already exists; pass --overwrite to replace it")
    variants = list(opts.variants)

    source = load_source(opts.run)
    size, size_origin = _native_size(source, opts.size)
    if opts.alignment == "ffhq" and size[0] != size[1]:
        raise DistillError(
            f"--alignment ffhq: FFHQ crops are square, the input size is {size[0]}x{size[1]} "
            f"({size_origin}); pass a square --size"
        )
    dataset = _run_dataset(source, opts.calibration)
    if "int8" in variants and dataset is None:
        raise DistillError(
            "--variants int8 needs calibration images from the training data: pass --calibration DATASET"
        )
    cfg = source.generator.config
    edits = _edit_records(source, dataset)
    strength = None if edits else _strength_spec(source, dataset)
    print(
        f"exporting {source.checkpoint} ({cfg.netG}, stride {source.stride}) at {size[0]}x{size[1]} -> {out}"
    )

    staging = out.parent / f".{out.name}.export-tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        onnx_path = export_onnx(source.generator, staging / VARIANT_FILES["fp32"], size, opts.opset)
        parity = check_parity(
            source.generator,
            onnx_path,
            parity_sizes(size, source.stride),
            strength_range=tuple(strength["range"]) if strength else (-1.0, 1.0),
            edit_ranges=[tuple(e["range"]) for e in edits] if edits else None,
        )
        print(
            f"parity vs PyTorch: max |diff| {parity['parity_max_abs_diff']:.2e} at {list(parity['parity_per_size'])}, batch 2"
        )
        views = _data_views(dataset, source, size, opts.num_calibration, opts.num_eval) if dataset else None
        files = [VARIANT_FILES["fp32"]]
        variant_records = {"fp32": {"file": VARIANT_FILES["fp32"], "providers": VARIANT_PROVIDERS["fp32"]}}
        if opts.timing_repeats:
            variant_records["fp32"].update(timing_record(onnx_path, size, opts.timing_repeats))
        refused: dict[str, Any] = {}
        for v in variants:
            eval_images = views.eval_inputs if views else _random_eval(size, opts.num_eval)
            try:
                record = build_variant(
                    v,
                    onnx_path,
                    staging,
                    eval_images=eval_images,
                    calibration=views.calibration if views else None,
                    native_size=size,
                    min_psnr_db=opts.min_variant_psnr,
                    timing_repeats=max(1, opts.timing_repeats),
                    eval_strengths=views.eval_strengths if views else None,
                    calibration_strengths=views.calibration_strengths if views else None,
                )
            except VariantRefused as e:
                print(f"distill export: {e}")
                refused[v] = {
                    "psnr_vs_fp32_db": e.psnr_db,
                    "min_psnr_db": e.bound_db,
                    "error_images": e.n_images,
                }
                continue
            record["error_inputs"] = views.eval_source if views else "random inputs (no dataset known)"
            variant_records[v] = record
            files.append(record["file"])
            print(
                f"{v}: PSNR vs fp32 {record['psnr_vs_fp32_db']:.2f} dB, {record['median_ms']:.1f} ms at {size[0]}x{size[1]}"
            )
        engines = _engine_table(staging, variant_records, views, size, opts)
        side = _teacher_and_direction(opts, views, staging)
        files += side["files"]
        for e in edits:  # each edit's direction beside the model, as the one-edit entry's direction.npy
            e["direction"] = shutil.copyfile(e.pop("source"), staging / f"edit_{e['attribute']}.npy").name
            files.append(e["direction"])
        preview = _write_preview(onnx_path, staging, views, size)
        files.append(preview["file"])
        files += _copy_samples(views, staging, opts.samples)
        report = dataset / FILTER_REPORT if dataset is not None else None
        domain = copy_domain(report, staging, opts.domain) if report and report.is_file() else None
        if domain is not None:
            files.append(domain.scorer)
        if strength and side["edit"]["alpha"] is None:
            raise DistillError(
                "a strength-conditioned student needs the edit's alpha (what strength 1.0 means): pass --alpha A"
            )
        manifest = _manifest(
            opts,
            name,
            source,
            size,
            size_origin,
            views,
            variant_records,
            refused,
            parity,
            side,
            preview,
            file_records(staging, files),
            strength,
            edits,
        )
        manifest.domain = domain
        if engines:
            from model_zoo.schema import EngineTiming

            manifest.engines = [EngineTiming.model_validate(row) for row in engines]
        entry = write_entry(staging, manifest)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    entry = ModelEntry(name=out.name, path=out, spec=entry.spec)
    # the bare name finds this entry from here unless another zoo folder comes first or holds the name first
    first = next((r for r in zoo_roots() if (r / out.name / MANIFEST).is_file()), None)
    zoo = (
        "" if first is not None and first.resolve() == out.parent.resolve() else f" --model-zoo {out.parent}"
    )
    print(
        f"wrote {out} ({', '.join(variant_records)}); check it with `distill models verify {out.name}{zoo}`"
    )
    if refused:
        figures = "; ".join(
            f"{v}: {r['psnr_vs_fp32_db']:.2f} dB < {r['min_psnr_db']:g} dB" for v, r in refused.items()
        )
        raise DistillError(
            f"variant(s) refused on PSNR against fp32 ({figures}); {out} was written without them"
        )
    return entry


def _engine_table(
    staging: Path,
    variant_records: dict[str, Any],
    views: DataViews | None,
    size: tuple[int, int],
    opts: ExportOptions,
) -> list[dict[str, Any]]:
    """Each variant in each engine this machine has, timed at the native size with its PSNR against fp32 on the
    held-out inputs (manifest ``engines``, see engines/measure.py); none with --timing-repeats 0."""
    if not opts.timing_repeats:
        return []
    from engines.measure import engine_table, format_table

    images = (views.eval_inputs if views else _random_eval(size, opts.num_eval)).astype(np.float32)
    rows = engine_table(
        {v: staging / r["file"] for v, r in variant_records.items()},
        size,
        images,
        repeats=opts.timing_repeats,
        variants=variant_records,
    )
    print(f"engines at {size[0]}x{size[1]}, batch 1:\n" + "\n".join(format_table(rows)))
    return rows


def _strength_spec(source: StudentSource, dataset: Path | None) -> dict[str, Any] | None:
    """A conditional student's manifest ``strength``: the range its pairs were drawn over (dataset.json's
    ``alpha_range``, or its one named edit's range with 0) and the default (1.0, the edit's alpha, when inside
    it); None for a fixed-strength one."""
    if not is_conditional(source.generator):
        return None
    meta = _pairs_metadata(source, dataset)
    named = meta.get("edits") or []
    trained = meta.get("alpha_range")
    if len(named) == 1:  # one named edit: its range, and 0 (a tenth of its pairs leave it inactive)
        trained = [min(float(named[0]["range"][0]), 0.0), max(float(named[0]["range"][1]), 0.0)]
    if not trained:
        raise DistillError(
            f"{source.checkpoint}: a strength-conditioned student, but no trained strength range is "
            "known; pass --calibration DATASET (its pairs, made with `distill pairs --alpha-range`)"
        )
    low, high = float(trained[0]), float(trained[1])
    return {"range": [low, high], "default": 1.0 if low <= 1.0 <= high else high}


def _edit_records(source: StudentSource, dataset: Path | None) -> list[dict[str, Any]]:
    """A K-edit student's manifest ``edits`` from its pairs' dataset.json, in the strength vector's order, each
    with its direction file's ``source`` path; [] for a student of one edit."""
    k = edit_count(source.generator)
    if k == 1:
        return []
    edits = _pairs_metadata(source, dataset).get("edits") or []
    if len(edits) != k:
        raise DistillError(
            f"{source.checkpoint}: a student of {k} edits, but {len(edits)} edits are known from its pairs; "
            "pass --calibration DATASET (its multi-edit pairs, made with `distill pairs --direction NAME=FILE ...`)"
        )
    out = []
    for e in edits:
        low, high = float(e["range"][0]), float(e["range"][1])
        if not Path(e["direction"]["path"]).is_file():
            raise DistillError(
                f"{e['direction']['path']}: the direction of edit {e['name']!r} (the pairs' dataset.json) is gone; "
                "restore it to export the student"
            )
        out.append(
            {
                "attribute": e["name"],
                "source": Path(e["direction"]["path"]),
                "alpha": float(e["alpha"]),
                "layers": [int(v) for v in e["layers"]],
                "range": [min(low, 0.0), max(high, 0.0)],  # an inactive edit is trained at 0
                "default": 0.0,
            }
        )
    return out


def _pairs_metadata(source: StudentSource, dataset: Path | None) -> dict[str, Any]:
    """The student's pairs' dataset.json: ``dataset``'s, else the copy the run recorded; {} when neither."""
    meta = read_metadata(dataset) if dataset is not None and (dataset / METADATA).is_file() else {}
    return meta or source.run_meta.get("dataset_metadata") or {}


def _random_eval(size: tuple[int, int], n: int) -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (max(1, min(n, 4)), 3, *size)).astype(np.float32)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Replace ``out`` by ``staging`` with renames (the old entry is removed only once the new one is in place)."""
    old = out.parent / f".{out.name}.export-old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        os.replace(out, old)
    os.replace(staging, out)
    if old.exists():
        shutil.rmtree(old)


def _manifest(
    opts: ExportOptions,
    name: str,
    source: StudentSource,
    size: tuple[int, int],
    size_origin: str,
    views: DataViews | None,
    variants: dict[str, Any],
    refused: dict[str, Any],
    parity: dict[str, Any],
    side: dict[str, Any],
    preview: dict[str, Any],
    files: dict[str, FileRecord],
    strength: dict[str, Any] | None,
    edits: list[dict[str, Any]],
) -> EntryManifest:
    """The entry's manifest; ``strength`` (one edit) and ``edits`` (K edits) are a conditional student's, given
    here so that the one-edit ``edits`` record is derived with the strength range."""
    cfg = source.generator.config
    data: dict[str, Any] = {}
    if views is not None:
        data = {
            "dataset": dataset_provenance(views.dataset, opts.out),
            **views.counts,
            "teacher_resolution": views.meta.get("resolution"),
            "eval_inputs": views.eval_source,
        }
    names = [str(e["name"]) for e in (views.meta.get("edits") or [])] if views is not None else []
    description = opts.description or (
        f"Pix2PixHD student ({cfg.netG}, ngf {cfg.ngf}) for the '{side['edit']['attribute']}' edit"
        if side["edit"]["attribute"]
        else f"Pix2PixHD student ({cfg.netG}, ngf {cfg.ngf}) for the edits {', '.join(names)}"
        if len(names) > 1 and edit_count(source.generator) > 1
        else f"Pix2PixHD student ({cfg.netG}, ngf {cfg.ngf})"
    )
    return EntryManifest.model_validate(
        {
            "name": name,
            "description": description,
            "edit": side["edit"],
            "input": {
                "name": "input",
                "layout": "NCHW",
                "dtype": "float32",
                "size": list(size),
                "channels": 3,
                "range": [-1, 1],
                "stride": source.stride,
                "size_source": size_origin,
                "alignment": opts.alignment,
                "normalization": "x / 127.5 - 1 on uint8 RGB (pix2pixHD's (x/255 - 0.5) / 0.5)",
            },
            "output": {
                "name": "output",
                "layout": "NCHW",
                "dtype": "float32",
                "range": [-1, 1],
                "denormalization": "clip((y + 1) * 127.5, 0, 255) as uint8 RGB",
            },
            "variants": variants,
            "refused_variants": refused,
            "teacher": side["teacher"],
            "direction": side["direction"],
            "truncation": side["truncation"],
            "data": data,
            "training": _training_record(source),
            "export": {
                "opset": opts.opset,
                "exporter": "torch.onnx TorchScript (dynamo=False)",
                "dynamic_axes": {"batch": 0, "height": 2, "width": 3},
                **parity,
                "versions": versions(),
            },
            "preview": preview,
            "strength": strength,
            "edits": edits,
            "files": files,
        }
    )
