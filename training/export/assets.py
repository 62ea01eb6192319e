"""What an entry ships beside the student: the teacher and direction (for the legacy endpoint), samples, the preview."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import DistillError
from editing.images import make_grid, save_image, to_uint8
from engines.ort import cpu_session
from model_zoo.registry import (
    sha256_file,
)
from model_zoo.schema import provenance
from training.export.graph import PREVIEW_ROWS
from training.export.options import ExportOptions
from training.export.records import DataViews
from training.manifest import METADATA
from training.variants import (
    run_session,
)


def _copy_into(src: Path, staging: Path, stem: str, what: str, flag: str) -> str:
    if not src.is_file():
        raise DistillError(f"{flag} {src}: the {what} file does not exist; pass its current path with {flag}")
    name = stem + "".join(src.suffixes[-1:])
    shutil.copyfile(src, staging / name)
    return name


def _portable(value: Any) -> Any:
    """``value`` with every absolute path string in it rewritten by :func:`provenance` (nested dicts and lists)."""
    if isinstance(value, dict):
        return {k: _portable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_portable(v) for v in value]
    if isinstance(value, str) and Path(value).is_absolute():
        return provenance(value)
    return value


def _copy_portable_json(src: Path, dst: Path) -> None:
    """Copy a JSON sidecar (the direction fit's record) into the entry, its build-machine paths made portable:
    a fit run before provenance paths existed records absolute ones, and an entry never carries those."""
    try:
        record = json.loads(src.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DistillError(
            f"{src}: the direction's JSON record cannot be read ({e}); fix or remove it"
        ) from e
    dst.write_text(json.dumps(_portable(record), indent=2) + "\n", encoding="utf-8")


def _teacher_and_direction(opts: ExportOptions, views: DataViews | None, staging: Path) -> dict[str, Any]:
    """Copy the teacher and direction into the entry; their manifest records, the edit and the truncation."""
    meta = views.meta if views else {}
    named = meta.get("edits") or []
    if len(named) == 1:  # pairs of one named edit (--direction NAME=FILE): its records are the one edit's
        meta = {**meta, **{k: named[0][k] for k in ("direction", "alpha", "layers")}}
    t_meta, d_meta = (m if isinstance(m, dict) else {} for m in (meta.get("teacher"), meta.get("direction")))
    teacher_src = (
        Path(opts.teacher) if opts.teacher else (Path(t_meta["path"]) if t_meta.get("path") else None)
    )
    direction_src = (
        Path(opts.direction) if opts.direction else (Path(d_meta["path"]) if d_meta.get("path") else None)
    )
    alpha = opts.alpha if opts.alpha is not None else meta.get("alpha")
    layers = list(opts.layers) if opts.layers is not None else meta.get("layers")
    normalize = bool(opts.normalize or meta.get("normalize", False))
    attribute = (
        opts.attribute
        or d_meta.get("attribute")
        or (named[0]["name"] if len(named) == 1 else None)
        or (direction_src.stem if direction_src else None)
    )
    files: list[str] = []
    teacher = direction = None
    if teacher_src is not None:
        if (
            not opts.teacher
            and t_meta.get("sha256")
            and teacher_src.is_file()
            and sha256_file(teacher_src) != t_meta["sha256"]
        ):
            raise DistillError(
                f"{teacher_src}: this teacher changed since the pairs were generated (sha256 differs from {METADATA}); "
                "pass the original with --teacher PATH"
            )
        name = _copy_into(teacher_src, staging, "teacher", "teacher", "--teacher")
        files.append(name)
        teacher = {"file": name, "source": provenance(teacher_src)}
        teacher.update({k: t_meta[k] for k in ("z_dim", "w_dim", "num_ws") if k in t_meta})
    if direction_src is not None:
        if alpha is None or layers is None:
            raise DistillError(
                "--direction needs the edit strength and layers: pass --alpha A --layers START:STOP"
            )
        name = _copy_into(direction_src, staging, "direction", "direction", "--direction")
        files.append(name)
        sidecar = direction_src.with_suffix(".json")
        if sidecar.is_file() and sidecar != direction_src:
            _copy_portable_json(sidecar, staging / "direction.json")
            files.append("direction.json")
        direction = {"file": name, "normalize": normalize, "source": provenance(direction_src)}
        if d_meta.get("method"):
            direction["method"] = d_meta["method"]
    edit = {
        "attribute": attribute,
        "alpha": None if alpha is None else float(alpha),
        "layers": None if layers is None else [int(v) for v in layers],
    }
    return {
        "files": files,
        "teacher": teacher,
        "direction": direction,
        "edit": edit,
        "truncation": meta.get("truncation"),
    }


def _copy_samples(views: DataViews | None, staging: Path, extra: list[str] | None = None) -> list[str]:
    """samples/: a few held-out input images (teacher originals, and ``extra`` pictures) for the service's demo page."""
    sources = ([] if views is None else list(views.sample_files)) + [Path(p) for p in extra or []]
    if not sources:
        return []
    for src in sources:
        if not src.is_file():
            raise DistillError(f"--samples {src}: no such image file")
    (staging / "samples").mkdir()
    names = []
    for src in sources:
        name = f"samples/{src.name}"
        shutil.copyfile(src, staging / name)
        names.append(name)
    return names


def _write_preview(
    onnx_path: Path, staging: Path, views: DataViews | None, size: tuple[int, int]
) -> dict[str, Any]:
    """preview.png: input | student | teacher target on held-out pairs, else input | student on random inputs."""
    session = cpu_session(onnx_path)
    if views is not None:
        inputs, targets = views.eval_inputs[:PREVIEW_ROWS], views.eval_targets[:PREVIEW_ROWS]
        columns, origin = ["input", "student", "teacher target"], views.eval_source
    else:
        gen = torch.Generator().manual_seed(0)
        low = torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
        inputs = (
            torch.nn.functional.interpolate(low, size=size, mode="bicubic", align_corners=False)
            .clamp(-1, 1)
            .numpy()
        )
        targets = None
        columns, origin = (
            ["input", "student"],
            "random smooth-noise inputs: no dataset was known (pass --calibration DATASET)",
        )
    strengths = (
        views.eval_strengths[:PREVIEW_ROWS]
        if views is not None and views.eval_strengths is not None
        else None
    )
    outputs = run_session(session, inputs.astype(np.float32), strengths=strengths)
    grids = [
        to_uint8(torch.from_numpy(a)) for a in (inputs, outputs) + ((targets,) if targets is not None else ())
    ]
    save_image(staging / "preview.png", make_grid([[g[i] for g in grids] for i in range(len(inputs))]))
    return {"file": "preview.png", "columns": columns, "rows": len(inputs), "inputs": origin}
