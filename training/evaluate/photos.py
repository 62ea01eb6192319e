"""`distill evaluate --photos DIR`: the student and the legacy projection on photographs, judged by whether the face
is still the same person (dlib's face descriptor) and by the scorer's attribute.

Every photo goes the service's face path (``editor``: the caller passes app.offline.edit_photos, which runs
app.faces and app.routers.transform; the pipeline does not import the service): read as an upload, every face found
(dlib) and FFHQ-aligned at the model's native size, edited by the student through the micro-batcher on the engine
`distill serve` chooses, and pasted back into the photo. An entry whose manifest says ``alignment: none`` (its
service centre-crops a photo whole) goes the face path too: on a photograph only it keeps the rest of the picture.
On the first ``--photos-legacy-num`` photos with a face, the legacy projection edits the same aligned crops (at the
teacher's resolution, resized as the service's legacy path resizes them) and is pasted back the same way.

Figures per path, over the faces found in the inputs (the *identity*, the photo returned unchanged, is the
reference row):

- identity distance: Euclidean distance between dlib's 128-d descriptor of the input face and of the same face in
  the path's output (the face found there again, the box overlapping most with IoU >= 0.5; when none is found, read
  at the input's landmarks: the paste-back keeps the face in place);
- same person: the share of faces under dlib's usual threshold, 0.6; found again: the share the detector finds again;
- with a scorer, on the aligned crops (what the scorer reads on teacher samples): *edit success*, the share of faces
  whose attribute moves, in the teacher's direction, by at least half the teacher's mean change on held-out seeds
  (the seed evaluation's definition, with the teacher's per-image change replaced by its mean: a photo has no
  teacher edit), the mean change in that direction, and the preservation of the other attributes.

Written to REPORT_DIR: photos.json (:class:`PhotosReport`), photos.md and photos_grid.png (input | student | legacy
per photo, pasted back); with the seed evaluation, report.md carries the same section.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel
from tqdm import tqdm

from core.atomic import atomic_write_text
from core.errors import DistillError
from editing.alignment.edited import PhotoEditor
from editing.alignment.identity import SAME_PERSON, FaceDescriptor, default_descriptor, distance
from editing.alignment.landmarks import Box, Face, FaceFinder, default_finder
from editing.alignment.pasteback import paste_faces
from editing.images import save_image
from model_zoo.registry import ModelEntry
from training.evaluate.inputs import (
    BATCH,
    SUCCESS_FRACTION,
    EditSpec,
    EvaluateOptions,
    Scoring,
    edit_figures,
    latency,
    spread,
)
from training.evaluate.paths import legacy_outputs, resize, teacher_pairs

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
MATCH_IOU = 0.5  # an output face is the input's when their boxes overlap at least this much
TILE = 200  # the grid's square tiles, in pixels
PHOTOS_TEACHER_SEEDS = 100  # --photos-only: held-out seeds the teacher's mean change is read on (default)
PHOTOS_JSON, PHOTOS_MD, PHOTOS_GRID = "photos.json", "photos.md", "photos_grid.png"


class FaceRow(BaseModel):
    """One face of one photo: where it is, and per path its identity distance, whether the detector found it again,
    and the scorer's attribute on its aligned crop (``input`` for the unedited crop)."""

    photo: str
    face: int
    box: list[float]
    distance: dict[str, float]
    found_again: dict[str, bool]
    attribute: dict[str, float] = {}


class PathFigures(BaseModel):
    """One path's figures over its faces (see the module docstring)."""

    photos: int
    faces: int
    identity_distance: dict[str, float | int]  # n, mean, p10, p50, p90
    same_person: float
    found_again: float
    edit: dict[str, Any] | None = None  # edit_figures: edit_success, mean_change, preservation, other_changes


class PhotosReport(BaseModel):
    """``photos.json``: what was measured on the photos, how, and the figures."""

    format: str = "distill-evaluation-photos/1"
    folder: str
    files: list[str]
    no_face: list[str]
    errors: dict[str, str]  # file -> the service's error code and message
    faces: int
    framing: str
    engine: str
    descriptor: str
    same_person_threshold: float = SAME_PERSON
    edit: dict[str, Any] | None
    legacy: dict[str, Any] | None
    paths: dict[str, PathFigures]
    face_rows: list[FaceRow]
    grid: dict[str, Any]


@dataclass(frozen=True)
class PhotoInputs:
    """The photos to measure and the dlib models that read their faces, checked before any other work."""

    folder: Path
    files: list[Path]
    finder: FaceFinder
    describe: FaceDescriptor


def photo_inputs(folder: str | Path) -> PhotoInputs:
    """The photos of ``folder`` and the face detector and descriptor; DistillError naming the `faces` extra when
    this install lacks it, or naming the folder when it holds no photos."""
    finder, describe = default_finder(), default_descriptor()
    return PhotoInputs(Path(folder), list_photos(Path(folder)), finder, describe)


def list_photos(folder: Path) -> list[Path]:
    """The pictures in ``folder`` (by suffix, searched recursively, hidden files left out), sorted; DistillError when
    it is not a folder or holds none."""
    if not folder.is_dir():
        raise DistillError(f"{folder}: not a folder; --photos takes a folder of photographs (jpg, png, webp)")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise DistillError(f"{folder}: no photographs ({', '.join(sorted(SUFFIXES))}); put some there")
    return files


def _iou(a: Box, b: Box) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def identity_of(
    output: np.ndarray,
    faces: list[Face],
    refs: list[np.ndarray],
    finder: FaceFinder,
    describe: FaceDescriptor,
) -> list[tuple[float, bool]]:
    """Per input face: (descriptor distance from ``refs`` in ``output``, whether the detector found it there again)."""
    found = finder.find(output)
    result = []
    for face, ref in zip(faces, refs, strict=True):
        best = max(found, key=lambda f: _iou(f.box, face.box), default=None)
        again = best is not None and _iou(best.box, face.box) >= MATCH_IOU
        result.append((distance(ref, describe(output, best if again and best else face)), again))
    return result


def teacher_mean_change(
    G: torch.nn.Module, direction: torch.Tensor, spec: EditSpec, scoring: Scoring, seeds: list[int]
) -> float:
    """The teacher's mean change of the scorer's attribute on ``seeds`` (edited minus original)."""
    change = []
    for i in tqdm(range(0, len(seeds), BATCH), desc="teacher's change", unit="batch", leave=False):
        originals, edits = teacher_pairs(G, direction, spec, seeds[i : i + BATCH])
        a = scoring.attribute
        change += [e[a] - o[a] for o, e in zip(scoring.score(originals), scoring.score(edits), strict=True)]
    return float(np.mean(change))


def _tile(image: np.ndarray | None) -> np.ndarray:
    """``image`` fitted into a white TILE x TILE square (a blank tile for None)."""
    tile = np.full((TILE, TILE, 3), 255, np.uint8)
    if image is None:
        return tile
    h, w = image.shape[:2]
    scale = TILE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    y, x = (TILE - size[1]) // 2, (TILE - size[0]) // 2
    tile[y : y + size[1], x : x + size[0]] = small
    return tile


def evaluate_photos(
    opts: EvaluateOptions,
    inputs: PhotoInputs,
    entry: ModelEntry,
    spec: EditSpec,
    G: torch.nn.Module,
    direction: torch.Tensor,
    scoring: Scoring | None,
    teacher_change: float | None,
    out: Path,
    editor: PhotoEditor,
) -> PhotosReport:
    """Measure the student and the legacy path on the photos (see the module docstring); write photos.json and
    photos_grid.png into ``out``. ``teacher_change``: the teacher's mean attribute change on held-out seeds (with a
    scorer)."""
    folder, files, finder, describe = inputs.folder, inputs.files, inputs.finder, inputs.describe
    served, engine = editor(entry.name, entry.path.parent, files)
    with_faces = [p for p in served if p.faces]

    legacy_n = min(opts.photos_legacy_num, len(with_faces))
    legacy: dict[str, Any] | None = None
    legacy_photos: dict[Path, tuple[np.ndarray, list[np.ndarray]]] = {}
    if legacy_n:
        res = G.img_resolution
        crops = [(p, c) for p in with_faces[:legacy_n] for c in p.crops]
        names = [hashlib.sha256(c.tobytes()).hexdigest()[:16] for _, c in crops]
        outputs, seconds, reused = legacy_outputs(
            G,
            direction,
            spec,
            names,
            [resize(c, (res, res)) for _, c in crops],
            opts.legacy_steps,
            opts.vgg16,
            out / "legacy_photos",
        )
        for p in with_faces[:legacy_n]:
            edited = [resize(o, c.shape[:2]) for (q, c), o in zip(crops, outputs, strict=True) if q is p]
            pasted = paste_faces(p.photo, edited, p.alignments, [f.landmarks for f in p.faces])
            legacy_photos[p.file] = (pasted, edited)
        legacy = {
            "photos": legacy_n,
            "faces": len(crops),
            "steps": opts.legacy_steps,
            "latency_per_face": latency(seconds),
            "reused_from_cache": reused,
            "distance": "VGG16 perceptual" if opts.vgg16 else "pyramid pixel (no --vgg16 weights)",
        }

    rows: list[FaceRow] = []
    for p in tqdm(with_faces, desc="photos, identity", unit="photo"):
        assert p.photo is not None and p.output is not None
        refs = [describe(p.photo, f) for f in p.faces]
        outputs_of = {"identity": p.photo, "student": p.output}
        if p.file in legacy_photos:
            outputs_of["legacy"] = legacy_photos[p.file][0]
        measured = {k: identity_of(v, p.faces, refs, finder, describe) for k, v in outputs_of.items()}
        for i, face in enumerate(p.faces):
            rows.append(
                FaceRow(
                    photo=p.file.relative_to(folder).as_posix(),
                    face=i,
                    box=[round(v, 1) for v in face.box],
                    distance={k: m[i][0] for k, m in measured.items()},
                    found_again={k: m[i][1] for k, m in measured.items()},
                )
            )

    edit = None
    if scoring and teacher_change is not None and rows:
        crops_of = {
            "input": [c for p in with_faces for c in p.crops],
            "student": [c for p in with_faces for c in p.edited],
            "legacy": [c for p in with_faces if p.file in legacy_photos for c in legacy_photos[p.file][1]],
        }
        scored = {k: scoring.score(v) if v else [] for k, v in crops_of.items()}
        for k, records in scored.items():
            for row, record in zip(rows, records, strict=False):  # legacy: the first faces only
                row.attribute[k] = record[scoring.attribute]
        edit = {
            "attribute": scoring.attribute,
            "others": scoring.others,
            "teacher_mean_change": teacher_change,
            "direction": "rise" if teacher_change >= 0 else "fall",
            "threshold": SUCCESS_FRACTION * abs(teacher_change),
            "read_on": "the aligned crops at the model's native size",
        }

    def figures(path: str, subset: list[FaceRow], read: list[dict[str, float]] | None) -> PathFigures:
        d = np.asarray([r.distance[path] for r in subset])
        fig = PathFigures(
            photos=len({r.photo for r in subset}),
            faces=len(subset),
            identity_distance=spread(d),
            same_person=float((d < SAME_PERSON).mean()),
            found_again=float(np.mean([r.found_again[path] for r in subset])),
        )
        if edit is not None and read is not None:
            assert teacher_change is not None and scoring is not None
            n = len(subset)
            orig = np.asarray([r[scoring.attribute] for r in scored["input"][:n]])
            outs = np.asarray([r[scoring.attribute] for r in read[:n]])
            others = {
                o: (
                    np.asarray([r[o] for r in scored["input"][:n]]),
                    np.asarray([r[o] for r in read[:n]]),
                )
                for o in scoring.others
            }
            sign = -1.0 if teacher_change < 0 else 1.0
            fig.edit = edit_figures(orig, orig + teacher_change, outs, sign, others)
        return fig

    paths: dict[str, PathFigures] = {}
    if rows:
        on_legacy = [r for r in rows if "legacy" in r.distance]
        paths["identity"] = figures("identity", rows, scored["input"] if edit else None)
        paths["student"] = figures("student", rows, scored["student"] if edit else None)
        if on_legacy:
            paths["legacy"] = figures("legacy", on_legacy, scored["legacy"] if edit else None)
            paths["student_on_legacy_photos"] = figures(
                "student", on_legacy, scored["student"] if edit else None
            )

    grid_rows = [
        [
            _tile(p.photo),
            _tile(p.output),
            _tile(legacy_photos[p.file][0] if p.file in legacy_photos else None),
        ]
        for p in with_faces
    ]
    if grid_rows:
        from editing.images import make_grid

        save_image(out / PHOTOS_GRID, make_grid(grid_rows))
    report = PhotosReport(
        folder=str(folder),
        files=[f.relative_to(folder).as_posix() for f in files],
        no_face=[
            p.file.relative_to(folder).as_posix() for p in served if p.error and p.error.startswith("no_face")
        ],
        errors={
            p.file.relative_to(folder).as_posix(): p.error
            for p in served
            if p.error and not p.error.startswith("no_face")
        },
        faces=len(rows),
        framing=f"the service's face path (FFHQ alignment at {entry.input_size[0]} px, every face, pasted back)"
        + (f"; the entry's manifest says alignment: {entry.alignment}" if entry.alignment != "ffhq" else ""),
        engine=engine,
        descriptor=f"dlib face_recognition_model_v1 ({describe.model_path.name}), 128-d, Euclidean",
        edit=edit,
        legacy=legacy,
        paths=paths,
        face_rows=rows,
        grid={
            "file": PHOTOS_GRID if grid_rows else None,
            "columns": ["input", "student (pasted back)", "legacy (pasted back)"],
            "photos": [p.file.relative_to(folder).as_posix() for p in with_faces],
        },
    )
    atomic_write_text(out / PHOTOS_JSON, report.model_dump_json(indent=2))
    return report


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def photos_markdown(r: PhotosReport) -> list[str]:
    """The photos section of report.md and photos.md."""
    lines = [
        "",
        "## Photographs",
        "",
        f"{len(r.files)} photos in `{r.folder}`, {r.faces} faces found; "
        f"no face in {len(r.no_face)}{' (' + ', '.join(r.no_face) + ')' if r.no_face else ''}"
        + (f"; refused: {', '.join(f'{k} ({v})' for k, v in r.errors.items())}" if r.errors else "")
        + ".",
        f"Framing: {r.framing}. Student: {r.engine}.",
        f"Identity: {r.descriptor}; the same person under {r.same_person_threshold:g}. The identity row is the photo "
        "returned unchanged.",
    ]
    if r.legacy:
        lg = r.legacy
        lines.append(
            f"Legacy: the first {lg['photos']} photos ({lg['faces']} faces), {lg['steps']} projection steps, "
            f"{lg['latency_per_face']['mean_ms'] / 1e3:.2f} s a face, {lg['distance']} distance."
        )
    if r.edit:
        e = r.edit
        lines.append(
            f"Edit success: the {e['attribute']} read on {e['read_on']} {e['direction']}s by at least "
            f"{e['threshold']:.4g}, half the teacher's mean change on held-out seeds ({e['teacher_mean_change']:.4g})."
        )
    else:
        lines.append("Edit success needs an attribute scorer: --scorer MODEL.onnx --attribute NAME=INDEX.")
    lines += [
        "",
        "| path | photos | faces | identity distance mean | p50 | same person | found again | edit success | "
        "mean attribute change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in r.paths.items():
        lines.append(
            f"| {name} | {p.photos} | {p.faces} | {_f(p.identity_distance['mean'])} | "
            f"{_f(p.identity_distance['p50'])} | {p.same_person:.0%} | {p.found_again:.0%} | "
            f"{'n/a' if p.edit is None else format(p.edit['edit_success'], '.0%')} | "
            f"{'n/a' if p.edit is None else _f(p.edit['mean_change'], 4)} |"
        )
    if r.grid["file"]:
        columns = " | ".join(r.grid["columns"])
        lines += [
            "",
            f"Photos {', '.join(r.grid['photos'])}, one per row: {columns}.",
            "",
            f"![{columns}]({r.grid['file']})",
        ]
    lines += ["", f"Every face's figures: [{PHOTOS_JSON}]({PHOTOS_JSON}).", ""]
    return lines


def write_photos_markdown(out: Path, r: PhotosReport, entry: ModelEntry, command: str) -> Path:
    """photos.md: the photos section on its own, with the entry and the command."""
    head = [f"# Photographs: {entry.name}", "", f"`{command}`"]
    return atomic_write_text(out / PHOTOS_MD, "\n".join(head + photos_markdown(r)))
