"""`distill align`: FFHQ-aligned crops of the faces in a set of photos, with ``alignment.jsonl``.

For evaluating a student on real photos, or feeding the projector. Output folder::

    OUT/<photo>_<face:02d>.png   the aligned crops (FFHQ recipe, --size pixels)
    OUT/alignment.jsonl          one row per face: source, face, file, size, quad (4 [x, y] in the photo),
                                 landmarks (68 [x, y] in the photo), box, score
    OUT/rejected.jsonl           one row per photo without a usable face: source, reason
    OUT/align.json               the settings (a re-run must use the same ones)
    OUT/report.md                counts and every rejected photo with its reason (a file name that is not
                                 UTF-8 is shown with its undecodable bytes as \\xNN)

Every crop is written atomically before its row is appended, so an interrupted run is re-run as is: photos
already in ``alignment.jsonl`` or ``rejected.jsonl`` are skipped (a torn last line is dropped and redone).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from core.atomic import atomic_write_json, atomic_write_text
from core.errors import DistillError, FieldError, file_errors
from editing.alignment.ffhq import align_face
from editing.alignment.landmarks import DETECT_MAX_SIDE, Face, FacesMode, default_finder, pick
from editing.images import save_image
from editing.pixels import to_rgb

ROWS = "alignment.jsonl"
REJECTED = "rejected.jsonl"
SETTINGS = "align.json"
REPORT = "report.md"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MAX_SIZE = 4096  # the largest crop side, 4x FFHQ's (an unbounded one, 100000, asks for hundreds of GB)


@dataclass(frozen=True)
class AlignedFace:
    """One row of ``alignment.jsonl``: where an aligned crop came from (coordinates in source pixels)."""

    source: str
    face: int
    file: str
    size: int
    quad: list[list[float]]
    landmarks: list[list[float]]
    box: list[float]
    score: float


@dataclass(frozen=True)
class Rejected:
    """One row of ``rejected.jsonl``: a photo that gave no crop, and why."""

    source: str
    reason: str


def collect_photos(paths: list[str], out: Path) -> list[Path]:
    """The photos named by ``paths`` (files, or folders searched recursively), resolved, sorted, without ``out``."""
    photos: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            photos += [
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and p.suffix.lower() in PHOTO_SUFFIXES
                and out.resolve() not in p.resolve().parents
            ]
        elif path.is_file():
            photos.append(path)
        else:
            raise DistillError(f"{path}: no such file or folder; pass photos or folders of photos")
    unique = sorted({p.resolve() for p in photos})
    if not unique:
        raise DistillError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) in {', '.join(paths)}")
    return unique


def crop_stems(photos: list[Path]) -> dict[Path, str]:
    """A file-name stem per photo: the photo's own, with a short hash of its path when two photos share it."""
    counts: dict[str, int] = {}
    for p in photos:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {
        p: p.stem if counts[p.stem] == 1 else f"{p.stem}-{hashlib.sha1(os.fsencode(p)).hexdigest()[:8]}"
        for p in photos
    }


def shown(path: str) -> str:
    """A path as UTF-8 text can hold it: bytes of a non-UTF-8 file name (kept by Python as lone surrogates,
    which no UTF-8 file can store) written as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The JSON rows of a .jsonl file; a torn last line (an interrupted append) is dropped and the file repaired.
    A row that is not a JSON object with a ``source`` is a one-line error naming the line."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if lineno != len(lines):
                raise DistillError(f"{path}:{lineno}: not JSON ({e}); delete the folder and re-run") from e
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
            continue
        except RecursionError:
            raise DistillError(
                f"{path}:{lineno}: JSON nested too deeply; delete the folder and re-run"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("source"), str):
            raise DistillError(
                f"{path}:{lineno}: not a row of distill align (a JSON object with a source); "
                "delete the folder and re-run"
            )
        rows.append(row)
    return rows


def append_row(path: Path, row: AlignedFace | Rejected) -> None:
    """Append one JSON line and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(asdict(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_photo(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3], turned upright by its EXIF orientation, converted as the service converts uploads
    (16-bit greys scaled to 8 bits, not clipped; alpha over white)."""
    with Image.open(path) as im:
        return np.asarray(to_rgb(ImageOps.exif_transpose(im)))


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``align.json``, or refuse a re-run whose settings differ from the ones the folder was made with."""
    path = out / SETTINGS
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            raise DistillError(
                f"{path}: not the settings of a distill align run ({why}); delete the folder and re-run, "
                "or choose another --out"
            ) from None
        if not isinstance(old, dict):
            raise DistillError(
                f"{path}: not the settings of a distill align run (a JSON {type(old).__name__}, not an object); "
                "delete the folder and re-run, or choose another --out"
            )
        changed = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise DistillError(
                f"{path}: this folder was aligned with other settings ({what}); "
                "re-run with the same options or choose another --out"
            )
    else:
        atomic_write_json(path, settings)


def align_photo(
    photo: Path, image: np.ndarray, faces: list[Face], stem: str, out: Path, size: int, mode: FacesMode
) -> list[AlignedFace]:
    """Write the crops of ``faces`` (largest first; only the first with ``mode="largest"``); their rows."""
    rows = []
    for index, face in enumerate(pick(faces, mode)):
        crop, alignment = align_face(image, face.landmarks, size)
        name = f"{stem}_{index:02d}.png"
        save_image(out / name, crop)
        rows.append(
            AlignedFace(
                source=str(photo),
                face=index,
                file=name,
                size=size,
                quad=np.round(alignment.quad, 3).tolist(),
                landmarks=face.landmarks.tolist(),
                box=[round(v, 2) for v in face.box],
                score=round(face.score, 4),
            )
        )
    return rows


def write_report(out: Path, settings: dict[str, Any]) -> Path:
    """``report.md``: photos, faces, and every rejected photo with its reason."""
    rows, rejected = read_rows(out / ROWS), read_rows(out / REJECTED)
    photos = len({r["source"] for r in rows}) + len(rejected)
    lines = [
        "# distill align",
        "",
        f"FFHQ alignment at {settings['size']} px, faces={settings['faces']}: {photos} photos, "
        f"{len(rows)} aligned faces, {len(rejected)} photos rejected.",
        "",
        "| rejected photo | reason |",
        "|---|---|",
        *(f"| {shown(r['source'])} | {shown(r['reason'])} |" for r in rejected),
    ]
    return atomic_write_text(out / REPORT, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class AlignOptions:
    """What ``distill align`` does: one field per flag (same names, underscores for dashes, same defaults)."""

    photos: list[str]  # photos, or folders searched recursively
    out: str  # output folder (crops, alignment.jsonl, report.md)
    size: int = 1024  # side of the aligned crops in pixels (FFHQ's)
    faces: FacesMode = "largest"  # the largest face of each photo, or every face
    detect_size: int = DETECT_MAX_SIDE  # detect on a copy this many pixels on its longer side


@dataclass(frozen=True)
class AlignSummary:
    """What a run did: faces aligned, photos rejected, photos skipped as already done, and where it wrote."""

    faces: int
    rejected: int
    skipped: int
    rows: Path
    report: Path


def align_folder(opts: AlignOptions) -> AlignSummary:
    """Align every face of ``opts.photos`` into ``opts.out``, resuming where an earlier run stopped."""
    out = Path(opts.out)
    if not 8 <= opts.size <= MAX_SIZE:
        raise FieldError(
            "size", f"{opts.size}: the crop side must be 8 to {MAX_SIZE} pixels (FFHQ's is 1024)"
        )
    if opts.detect_size < 80:
        raise FieldError(
            "detect_size",
            f"{opts.detect_size}: the detector finds faces from about 80 pixels; "
            "pass at least 80 (default 640)",
        )
    check_out(out)
    photos = collect_photos(opts.photos, out)
    with file_errors(out):
        return _align(opts, out, photos)


def check_out(out: Path) -> None:
    """Refuse an output path that cannot be a folder: a file, or a symbolic link that loops or leads nowhere."""
    try:
        out.resolve()
    except (RuntimeError, OSError) as e:
        raise FieldError(
            "out", f"{out}: a symbolic link on this path loops ({e}); fix it or choose another folder"
        ) from None
    if out.is_symlink() and not out.exists():
        raise FieldError(
            "out", f"{out}: a symbolic link to nothing ({os.readlink(out)}); fix it or choose another folder"
        )
    if out.exists() and not out.is_dir():
        raise FieldError("out", f"{out}: is a file; choose a folder")


def _align(opts: AlignOptions, out: Path, photos: list[Path]) -> AlignSummary:
    """The work of :func:`align_folder` once its options are checked: errors writing ``out`` propagate."""
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "size": opts.size,
        "faces": opts.faces,
        "detect_max_side": opts.detect_size,
        "recipe": "ffhq",
        "resampling": "pillow",
    }
    check_settings(out, settings)
    done = {r["source"] for r in read_rows(out / ROWS)} | {r["source"] for r in read_rows(out / REJECTED)}
    todo = [p for p in photos if str(p) not in done]
    stems = crop_stems(photos)
    finder = replace(default_finder(), detect_max_side=opts.detect_size)
    counts = {"faces": 0, "rejected": 0, "skipped": len(photos) - len(todo)}
    bar = tqdm(todo, desc="align", unit="photo")
    for photo in bar:
        try:
            image = load_photo(photo)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as e:
            append_row(out / REJECTED, Rejected(str(photo), f"unreadable image: {e}"))
            counts["rejected"] += 1
            continue
        faces = finder.find(image)
        if not faces:
            append_row(out / REJECTED, Rejected(str(photo), "no face found (dlib frontal face detector)"))
            counts["rejected"] += 1
            continue
        for row in align_photo(photo, image, faces, stems[photo], out, opts.size, opts.faces):
            append_row(out / ROWS, row)
            counts["faces"] += 1
        bar.set_postfix(counts)
    report = write_report(out, settings)
    return AlignSummary(counts["faces"], counts["rejected"], counts["skipped"], out / ROWS, report)
