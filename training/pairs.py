"""`distill pairs`: a StyleGAN2 teacher and a latent direction -> an (original, edited) pair dataset.

Seed ``s`` gives ``z`` (a CPU ``torch.Generator`` seeded by ``s``, so every device sees the same z),
``w = mapping(z, truncation)``, ``w' = w + alpha * d`` on the chosen W+ layers, and the two images
``train_A/<s>.png`` (original) and ``train_B/<s>.png`` (edited). With ``--alpha-range LO:HI`` each pair
gets its own relative strength ``s_i`` drawn from its seed (training/strength.py) and
``w' = w + s_i * alpha * d``: ``--alpha`` is then the unit (strength 1.0), recorded per row as
``strength`` beside the absolute ``alpha``. With several named edits (``--direction NAME=FILE`` each, their
``--alpha NAME=A`` and ``--alpha-range NAME=LO:HI``), each pair gets a strength vector drawn from its seed
(:func:`training.strength.edit_strengths_for_seed`: mostly one or two edits active, some pairs none) and
``w' = w + sum_k s_k * alpha_k * d_k``, recorded per row as ``edits`` {name: s_k}; dataset.json lists the
edits in that fixed order. The layout is the one in
:mod:`training.manifest`, plus::

    DATASET/latents.npz   seeds [N], w [N, w_dim] (mapped, truncated; the same on every layer),
                          w_edit [N, num_ws, w_dim] (the edited W+ that made train_B)
    DATASET/preview.png   originals (top row) over edited (bottom row) for the first seeds
    DATASET/pending/      while running: one file per finished batch (its rows and latents)

Interrupt safety: every file is written atomically (temp + rename). A batch's images are written
first, then its ``pending/`` file; a pair is done only when both images and that file exist. At the
end, and at the start of every run, pending files are folded into ``manifest.jsonl`` and
``latents.npz`` (both rewritten atomically) under a file lock, so several shards may share one
folder. Killing the command at any moment and re-running it finishes the set without duplicates.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.atomic import atomic_write, atomic_write_bytes
from core.errors import DistillError, FieldError
from core.sharding import resolve_shard
from core.versions import versions
from editing.directions import DEFAULT_LAYERS, apply_direction, load_direction
from editing.images import load_image, make_grid, save_image, to_uint8
from training.directions import file_sha256, read_sidecar, z_from_seeds
from training.manifest import (
    MANIFEST,
    METADATA,
    PairRecord,
    read_manifest,
    read_metadata,
    write_manifest,
    write_metadata,
)
from training.strength import (
    ACTIVE_EDITS,
    EDITS_UNITS_TEXT,
    StrengthRange,
    apply_strengths,
    edit_strengths_for_seed,
    strength_for_seed,
)
from training.strength import UNITS_TEXT as STRENGTH_UNITS_TEXT

FORMAT = "distill-pairs/1"
LATENTS = "latents.npz"
PREVIEW = "preview.png"
PENDING = "pending"
# Settings that must agree for pairs to belong to one dataset (resume, shards, merge).
COMPAT_KEYS = (
    "format",
    "teacher.sha256",
    "direction.sha256",
    "alpha",
    "alpha_range",
    "edits",
    "truncation",
    "layers",
    "normalize",
    "noise_mode",
    "resolution",
    "image_format",
)


def shard_seeds(seed_start: int, num: int, shard: int = 0, num_shards: int = 1) -> list[int]:
    """The seeds of one shard: ``seed_start <= s < seed_start + num`` with ``s % num_shards == shard``."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise DistillError(f"--shard {shard} --num-shards {num_shards}: need 0 <= shard < num-shards")
    if num < 0 or seed_start < 0:
        raise DistillError("--num and --seed-start must not be negative")
    return [s for s in range(seed_start, seed_start + num) if s % num_shards == shard]


def image_name(side: str, seed: int) -> str:
    return f"train_{side}/{seed:08d}.png"


def _get(meta: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        meta = meta.get(key) if isinstance(meta, dict) else None
    return meta


def _settings(value: Any) -> Any:
    """``value`` without the ``path`` of the files it names (shards on other machines see them elsewhere)."""
    if isinstance(value, dict):
        return {k: _settings(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_settings(v) for v in value]
    return value


def check_compatible(have: dict[str, Any], want: dict[str, Any], where: str, fix: str) -> None:
    """Raise DistillError naming every generation setting on which ``have`` and ``want`` differ."""
    diffs = [
        f"{k} {_settings(_get(have, k))!r} vs {_settings(_get(want, k))!r}"
        for k in COMPAT_KEYS
        if _settings(_get(have, k)) != _settings(_get(want, k))
    ]
    if diffs:
        raise DistillError(f"{where}: made with other settings ({'; '.join(diffs)}); {fix}")


# ----------------------------------------------------------------------------------------------
# Durable state: manifest + latents + pending batch files.


@dataclass
class PairSet:
    """Finished pairs keyed by seed: their manifest rows and latents."""

    rows: dict[int, PairRecord]
    w: dict[int, np.ndarray]
    w_edit: dict[int, np.ndarray]

    def add(self, row: PairRecord, w: np.ndarray, w_edit: np.ndarray) -> None:
        self.rows[row.seed] = row
        self.w[row.seed] = w
        self.w_edit[row.seed] = w_edit


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise DistillError(
            f"{path}: unreadable latents ({e}); delete it and re-run `distill pairs` to redo those pairs"
        ) from e


def pending_files(root: Path) -> list[Path]:
    d = root / PENDING
    return sorted(d.glob("*.npz")) if d.is_dir() else []


def load_done(root: str | os.PathLike) -> tuple[PairSet, list[Path]]:
    """Read-only: every durable pair of ``root`` (manifest + latents + pending files) and the pending files.

    A pair counts only when its row, its latents and both images exist; anything less is redone.
    """
    root = Path(root)
    rows: dict[int, PairRecord] = {}
    lat_w: dict[int, np.ndarray] = {}
    lat_e: dict[int, np.ndarray] = {}
    if (root / MANIFEST).is_file():
        rows = {r.seed: r for r in read_manifest(root)}
    if (root / LATENTS).is_file():
        z = _read_npz(root / LATENTS)
        for i, s in enumerate(z["seeds"].tolist()):
            lat_w[s], lat_e[s] = z["w"][i], z["w_edit"][i]
    parts = pending_files(root)
    for part in parts:
        z = _read_npz(part)
        part_rows = [PairRecord(**r) for r in json.loads(str(z["rows"]))]
        for i, r in enumerate(part_rows):
            rows.setdefault(r.seed, r)
            lat_w[r.seed], lat_e[r.seed] = z["w"][i], z["w_edit"][i]
    done = PairSet({}, {}, {})
    for s, r in sorted(rows.items()):
        if s in lat_w and (root / r.a).is_file() and (root / r.b).is_file():
            done.add(r, lat_w[s], lat_e[s])
    return done, parts


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Hold ``fcntl.flock(mode)`` on ``path``; yields False when a non-blocking lock is busy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f, mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def write_pairset(root: Path, pairs: PairSet) -> None:
    """Atomically replace ``latents.npz`` then ``manifest.jsonl`` with ``pairs`` (sorted by seed)."""
    seeds = sorted(pairs.rows)
    arrays = {
        "seeds": np.asarray(seeds, dtype=np.int64),
        "w": np.stack([pairs.w[s] for s in seeds]) if seeds else np.zeros((0, 0), np.float32),
        "w_edit": np.stack([pairs.w_edit[s] for s in seeds]) if seeds else np.zeros((0, 0, 0), np.float32),
    }
    atomic_write(root / LATENTS, lambda f: np.savez(f, **arrays))
    write_manifest(root, [pairs.rows[s] for s in seeds])


def consolidate(root: str | os.PathLike) -> PairSet:
    """Fold pending batch files into manifest.jsonl + latents.npz (idempotent, safe against kills)."""
    root = Path(root)
    with _flock(root / ".consolidate.lock", fcntl.LOCK_EX):
        done, parts = load_done(root)
        on_disk = {r.seed for r in read_manifest(root)} if (root / MANIFEST).is_file() else set()
        if parts or on_disk != set(done.rows) or not (root / LATENTS).is_file():
            write_pairset(root, done)
        for p in parts:
            p.unlink(missing_ok=True)
    return done


def _tidy(root: Path) -> None:
    """Delete temp files left by killed writers (``.<name>.<random>.tmp``, see core.atomic) and an
    empty ``pending/``. Only called while no other writer holds the folder."""
    for d in (root, root / "train_A", root / "train_B", root / PENDING):
        if d.is_dir():
            for tmp in d.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)
    if (root / PENDING).is_dir() and not any((root / PENDING).iterdir()):
        (root / PENDING).rmdir()


@contextmanager
def _writer(root: Path) -> Iterator[None]:
    """Mark this process as a live writer of ``root``; tidy the folder when no other writer is live."""
    lock = root / ".writers.lock"
    with _flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
        if alone:
            _tidy(root)
    try:
        with _flock(lock, fcntl.LOCK_SH):
            yield
    finally:
        with _flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB) as alone:
            if alone:
                _tidy(root)


def write_preview(root: Path, rows: list[PairRecord], count: int = 8) -> Path | None:
    """preview.png: the first ``count`` originals over their edited versions."""
    rows = sorted(rows, key=lambda r: r.seed)[:count]
    if not rows:
        return None
    grid = make_grid([[load_image(root / r.a) for r in rows], [load_image(root / r.b) for r in rows]])
    return save_image(root / PREVIEW, grid)


# ----------------------------------------------------------------------------------------------
# Named edits.

DEFAULT_EDIT_RANGE = StrengthRange(
    -1.0, 1.0
)  # a named edit without --alpha-range: both ways, up to its alpha


@dataclass(frozen=True)
class PairEdit:
    """One named edit of a multi-edit dataset: its direction file, its unit ``alpha`` (strength 1.0) and the
    range its relative strength is drawn from when the pair applies it."""

    name: str
    direction: Path
    alpha: float
    range: StrengthRange = DEFAULT_EDIT_RANGE


def _named(items: list[Any], field: str) -> dict[str, Any]:
    """``(name, value)`` items -> {name: value}; FieldError on a plain value or a repeated name."""
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, tuple):
            raise FieldError(field, f"{item}: with named directions, name the edit too: NAME={item}")
        if item[0] in out:
            raise FieldError(field, f"{item[0]!r} given twice")
        out[item[0]] = item[1]
    return out


def edits_from_flags(
    directions: list[Any], alphas: list[Any] | None, ranges: list[Any] | None
) -> list[PairEdit] | None:
    """The named edits of ``--direction NAME=FILE`` (repeated), ``--alpha NAME=A`` and ``--alpha-range
    NAME=LO:HI`` (parsed to ``(name, value)`` tuples; plain values are the one-direction spelling); None for
    the one-direction spelling ``--direction FILE [--alpha A] [--alpha-range LO:HI]``. An edit without
    ``--alpha`` takes its sidecar's suggested alpha, without ``--alpha-range`` :data:`DEFAULT_EDIT_RANGE`."""
    if not any(isinstance(d, tuple) for d in directions):
        if len(directions) > 1:
            raise FieldError(
                "direction", "several directions must be named: NAME=FILE each, e.g. age=age.npy"
            )
        for values, field in ((alphas, "alpha"), (ranges, "alpha_range")):
            if any(isinstance(v, tuple) for v in values or []):
                raise FieldError(field, "names an edit, but the direction is not named: use NAME=FILE")
        return None
    files = _named(directions, "direction")
    alpha = _named(alphas or [], "alpha")
    spans = _named(ranges or [], "alpha_range")
    for given, field in ((alpha, "alpha"), (spans, "alpha_range")):
        stray = sorted(set(given) - set(files))
        if stray:
            raise FieldError(field, f"{stray[0]}: no --direction {stray[0]}=FILE")
    edits = []
    for name, file in files.items():
        if name not in alpha:
            suggested = (read_sidecar(file) or {}).get("suggested_alpha")
            if suggested is None:
                raise FieldError("alpha", f"{file} has no sidecar with a suggested alpha: give {name}=A")
            alpha[name] = round(float(suggested), 3)
        edits.append(PairEdit(name, Path(file), float(alpha[name]), spans.get(name, DEFAULT_EDIT_RANGE)))
    return edits


# ----------------------------------------------------------------------------------------------
# Generation.


def _direction_record(path: str | os.PathLike) -> dict[str, Any]:
    side = read_sidecar(path) or {}
    return {
        "path": str(Path(path).resolve()),
        "sha256": file_sha256(path),
        "attribute": side.get("attribute"),
        "method": side.get("method"),
    }


def dataset_metadata(
    G: torch.nn.Module,
    generator_path: str | os.PathLike,
    direction_path: str | os.PathLike | None,
    alpha: float,
    truncation: float,
    layers: tuple[int, int],
    normalize: bool,
    noise_mode: str,
    alpha_range: StrengthRange | None = None,
    edits: list[PairEdit] | None = None,
) -> dict[str, Any]:
    """dataset.json: everything needed to regenerate (and to check that shards belong together). A multi-edit
    dataset lists its ``edits`` (name, direction, alpha, layers, range) in place of ``direction`` and ``alpha``."""
    layer_span = [int(layers[0]), int(min(layers[1], G.num_ws))]
    if edits is not None:
        edit = {
            "edits": [
                {
                    "name": e.name,
                    "direction": _direction_record(e.direction),
                    "alpha": e.alpha,
                    "layers": layer_span,
                    "range": e.range.as_list(),
                }
                for e in edits
            ],
            "strength_units": EDITS_UNITS_TEXT,
            "strength_sampling": f"0, 1 or 2 active edits with chances {list(ACTIVE_EDITS)}, which uniform, each "
            "uniform in its range; from the pair's seed (training.strength.edit_strengths_for_seed)",
        }
    elif direction_path is not None:
        edit = {"direction": _direction_record(direction_path), "alpha": float(alpha)}
        if alpha_range is not None:
            edit |= {
                "alpha_range": alpha_range.as_list(),
                "strength_units": STRENGTH_UNITS_TEXT,
                "strength_sampling": "uniform in alpha_range, from the pair's seed "
                "(training.strength.strength_for_seed)",
            }
    else:
        raise DistillError("--direction: give the edit's direction file")
    return {
        "format": FORMAT,
        "teacher": {
            "path": str(Path(generator_path).resolve()),
            "sha256": file_sha256(generator_path),
            "z_dim": int(G.z_dim),
            "w_dim": int(G.w_dim),
            "num_ws": int(G.num_ws),
        },
        **edit,
        "truncation": float(truncation),
        "layers": layer_span,
        "normalize": bool(normalize),
        "noise_mode": noise_mode,
        "resolution": int(G.img_resolution),
        "image_format": "png",
        "seed_to_z": "torch.randn(z_dim, generator=torch.Generator('cpu').manual_seed(seed))",
        "latents": {"file": LATENTS, "w": "[N, w_dim] mapped w", "w_edit": "[N, num_ws, w_dim] edited W+"},
        "versions": versions("torch", "numpy"),
    }


def _write_batch(
    root: Path,
    seeds: list[int],
    images: np.ndarray,
    w: np.ndarray,
    w_edit: np.ndarray,
    rows: list[PairRecord],
) -> int:
    """Save one batch: both images of every pair, then the pending file that marks them done."""
    n = len(seeds)
    for j, s in enumerate(seeds):
        save_image(root / image_name("A", s), images[j])
        save_image(root / image_name("B", s), images[n + j])
    text = json.dumps([json.loads(r.to_json()) for r in rows])
    atomic_write(
        root / PENDING / f"{seeds[0]:08d}-{seeds[-1]:08d}.npz",
        lambda f: np.savez(f, seeds=np.asarray(seeds, np.int64), w=w, w_edit=w_edit, rows=np.asarray(text)),
    )
    return n


@torch.no_grad()
def generate_pairs(
    generator: str | os.PathLike,
    direction: str | os.PathLike | None,
    out: str | os.PathLike,
    alpha: float = 1.5,
    truncation: float = 0.7,
    num: int = 10000,
    layers: tuple[int, int] = DEFAULT_LAYERS,
    normalize: bool = False,
    batch_size: int = 8,
    seed_start: int = 0,
    device: str = "auto",
    shard: int = 0,
    num_shards: int = 1,
    noise_mode: str = "const",
    progress: bool = True,
    alpha_range: StrengthRange | None = None,
    edits: list[PairEdit] | None = None,
) -> PairSet:
    """Generate (or finish) the pairs of this shard in ``out``; returns every finished pair there. With
    ``edits`` (named edits, ``direction`` None) each pair applies its seed's strength vector."""
    from tqdm import tqdm

    from networks.stylegan2 import load_generator
    from training.devices import exact_float32, pick_device

    if batch_size < 1:
        raise DistillError("--batch-size must be at least 1")
    if noise_mode not in ("const", "none", "random"):
        raise DistillError(f"--noise-mode {noise_mode}: choose const, none or random")
    if noise_mode == "random":
        warnings.warn("--noise-mode random: pairs are not reproducible from their seeds", stacklevel=2)
    seeds = shard_seeds(seed_start, num, shard, num_shards)
    root = Path(out)
    dev = pick_device(device)
    exact_float32()
    G = load_generator(generator, device=dev)
    if (edits is None) == (direction is None):
        raise DistillError("--direction: give one direction FILE or named edits NAME=FILE, not both")
    named = [(e, load_direction(e.direction, G.num_ws, G.w_dim).to(dev)) for e in edits or []]
    d = load_direction(direction, G.num_ws, G.w_dim).to(dev) if direction is not None else None
    meta = dataset_metadata(
        G, generator, direction, alpha, truncation, layers, normalize, noise_mode, alpha_range, edits
    )
    if layers[0] >= G.num_ws:
        raise DistillError(f"--layers {layers[0]}:{layers[1]}: this generator has only {G.num_ws} W+ layers")
    if (root / METADATA).is_file():
        check_compatible(
            read_metadata(root), meta, str(root / METADATA), "use another --out or the same settings"
        )
    else:
        root.mkdir(parents=True, exist_ok=True)
        write_metadata(root, meta)
    direction_name = Path(direction).name if direction is not None else None

    with _writer(root):
        done = consolidate(root)
        todo = [s for s in seeds if s not in done.rows]
        if progress and len(todo) < len(seeds):
            print(
                f"resuming {root}: {len(seeds) - len(todo)} of {len(seeds)} pairs already done",
                file=sys.stderr,
            )
        bar = tqdm(total=len(todo), unit="pair", desc="pairs", disable=not progress, smoothing=0.1)
        pending: list[Future[int]] = []
        try:
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                for i in range(0, len(todo), batch_size):
                    batch = todo[i : i + batch_size]
                    z = z_from_seeds(batch, G.z_dim).to(dev)
                    ws = G.mapping(z, truncation_psi=truncation)
                    vectors: list[dict[str, float] | None] = [None] * len(batch)
                    strengths: list[float | None] = [None] * len(batch)
                    if d is None:  # named edits: w + sum_k s_k alpha_k d_k
                        table = [edit_strengths_for_seed(s, [e.range for e, _ in named]) for s in batch]
                        vectors = [{e.name: v[k] for k, (e, _) in enumerate(named)} for v in table]
                        ws_edit = ws
                        for k, (e, dk) in enumerate(named):
                            col = torch.tensor([v[k] for v in table])
                            ws_edit = apply_strengths(ws_edit, dk, e.alpha, col, layers, normalize)
                    elif alpha_range is None:
                        ws_edit = apply_direction(ws, d, alpha, layers, normalize)
                    else:
                        strengths = [strength_for_seed(s, alpha_range) for s in batch]
                        ws_edit = apply_strengths(ws, d, alpha, torch.tensor(strengths), layers, normalize)
                    images = to_uint8(G.synthesis(torch.cat([ws, ws_edit]), noise_mode=noise_mode))
                    rows = [
                        PairRecord(
                            seed=s,
                            a=image_name("A", s),
                            b=image_name("B", s),
                            alpha=None
                            if v is not None
                            else float(alpha)
                            if k is None
                            else round(k * float(alpha), 6),
                            truncation=float(truncation),
                            direction=direction_name,
                            strength=k,
                            edits=v,
                        )
                        for s, k, v in zip(batch, strengths, vectors, strict=True)
                    ]
                    w_np = ws[:, 0].float().cpu().numpy()
                    e_np = ws_edit.float().cpu().numpy()
                    pending.append(pool.submit(_write_batch, root, batch, images, w_np, e_np, rows))
                    while pending and (pending[0].done() or len(pending) > 4):
                        bar.update(pending.pop(0).result())
                for f in pending:
                    bar.update(f.result())
        finally:  # also on Ctrl-C: the finished batches go into the manifest now
            bar.close()
            done = consolidate(root)
        write_preview(root, list(done.rows.values()))
    return done


def merge_datasets(out: str | os.PathLike, sources: list[str | os.PathLike]) -> PairSet:
    """Merge shard folders into ``out`` (copying images); refuses folders made with other settings."""
    from tqdm import tqdm

    out = Path(out)
    srcs = [Path(s) for s in sources]
    if not srcs:
        raise DistillError("pairs-merge: name at least one source folder")
    metas = [read_metadata(s) for s in srcs]
    for s, m in zip(srcs[1:], metas[1:], strict=True):
        check_compatible(
            metas[0],
            m,
            str(s / METADATA) + f" (vs {srcs[0] / METADATA})",
            "only shards of the same `distill pairs` settings can be merged",
        )
    if any(s.resolve() == out.resolve() for s in srcs):
        raise DistillError(f"pairs-merge: OUT {out} is also a source; merge into a new folder")
    if (out / METADATA).is_file():
        check_compatible(read_metadata(out), metas[0], str(out / METADATA), "merge into a new folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        write_metadata(out, {**metas[0], "merged_from": [str(s.resolve()) for s in srcs]})
    with _writer(out):
        merged = consolidate(out)
        duplicates = 0
        for src in srcs:
            pairs, parts = load_done(src)
            if parts:
                print(
                    f"{src}: {len(parts)} unconsolidated batch files (interrupted run); merging their pairs too",
                    file=sys.stderr,
                )
            for s, row in tqdm(pairs.rows.items(), desc=f"merge {src.name}", unit="pair"):
                if s in merged.rows:
                    duplicates += 1
                    continue
                for rel in (row.a, row.b):
                    dst = out / rel
                    if not dst.is_file() or dst.stat().st_size != (src / rel).stat().st_size:
                        atomic_write_bytes(dst, (src / rel).read_bytes())
                merged.add(row, pairs.w[s], pairs.w_edit[s])
        with _flock(out / ".consolidate.lock", fcntl.LOCK_EX):
            write_pairset(out, merged)
        write_preview(out, list(merged.rows.values()))
    if duplicates:
        print(
            f"pairs-merge: {duplicates} seeds appeared more than once; kept the first copy", file=sys.stderr
        )
    return merged


# ----------------------------------------------------------------------------------------------
# The stage: its options and entry point.


@dataclass
class PairsOptions:
    """What ``distill pairs`` does: one field per flag. ``shard``/``num_shards`` None: from an Indexed Job's
    environment (see :func:`resolve_shard`), else 0 of 1."""

    generator: str | os.PathLike
    out: str | os.PathLike
    direction: str | os.PathLike | None = None  # the one edit's direction; None with ``edits``
    alpha: float = 1.5
    alpha_range: StrengthRange | None = None  # a relative strength per pair (training/strength.py)
    edits: list[PairEdit] | None = None  # named edits: a strength vector per pair, in place of ``direction``
    truncation: float = 0.7
    num: int = 10000
    layers: tuple[int, int] = DEFAULT_LAYERS
    normalize: bool = False
    batch_size: int = 8
    seed_start: int = 0
    device: str = "auto"
    shard: int | None = None
    num_shards: int | None = None
    noise_mode: str = "const"
    progress: bool = True


def make_pairs(opts: PairsOptions) -> PairSet:
    """Generate (or finish) this process's shard of the pairs ``opts`` describes; returns every finished pair."""
    shard, num_shards = resolve_shard(opts.shard, opts.num_shards)
    return generate_pairs(
        opts.generator,
        opts.direction,
        opts.out,
        alpha=opts.alpha,
        truncation=opts.truncation,
        num=opts.num,
        layers=opts.layers,
        normalize=opts.normalize,
        batch_size=opts.batch_size,
        seed_start=opts.seed_start,
        device=opts.device,
        shard=shard,
        num_shards=num_shards,
        noise_mode=opts.noise_mode,
        progress=opts.progress,
        alpha_range=opts.alpha_range,
        edits=opts.edits,
    )
