"""``distill transform``: the service's ``/transform`` path run over files and folders, resumable, with a record.

Every input goes through the functions the route calls (:mod:`app.routers.transform`): the same decoding
limits and error codes, framing (centred crop or FFHQ alignment), micro-batcher, paste-back and encoding, on a
:class:`~app.service.Service` loaded as ``distill serve`` loads it (the engine chosen by measurement behind the
accuracy gate). As many inputs are in flight as one micro-batch holds (``DISTILL_MAX_BATCH``), so the batcher
forms batches; that also bounds the photos in memory, so the service's face-path pixel budget (a guard
against many clients at once) is not taken here.

Each finished input leaves its output (``OUT/<name>.<format>``) and then its row (``OUT/.rows/<key>.json``),
each written to a temporary file and renamed: a run killed at any moment leaves complete files only, and the
next run skips the inputs whose row says done (an output without its row is redone). ``OUT/results.jsonl``
collects the rows, sorted by source, at the end of every run; a model with a recorded training domain gives each
row its ``domain`` (``X-Distill-Domain``'s value: ``inside`` or ``outside; age 0.12 below 0.20``). Refused inputs (4xx) are recorded and not
retried; a 5xx (queue full, an unexpected failure) is retried by the next run.

:func:`edit_photos` runs the face path (every face aligned, edited, pasted back) over photographs for
``distill evaluate --photos``, which measures what the service does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel
from tqdm import tqdm

from app import faces as face_path
from app.config import Settings
from app.domain import HEADER as DOMAIN_HEADER
from app.edits import resolve_edits
from app.errors import ServiceError
from app.routers.transform import (
    Align,
    Faces,
    Format,
    Size,
    aligned,
    edit_inputs,
    finish_output,
    frame_inputs,
    resolve_strengths,
)
from app.service import LoadedModel, Service, select_entries
from app.timing import StageTimer
from core.atomic import atomic_write_bytes, atomic_write_text
from core.errors import DistillError
from editing.alignment.edited import EditedPhoto
from editing.pixels import from_output

RESULTS = "results.jsonl"
ROWS = ".rows"  # one row per finished input, written atomically: what a resumed run skips
SUFFIXES = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


@dataclass(frozen=True)
class TransformOptions:
    """What ``distill transform`` edits, with which model, how (the ``/transform`` fields) and where to."""

    inputs: tuple[Path, ...]
    model: str
    out: Path
    strength: float | None = None
    edits: dict[str, float] | None = None  # edit name -> relative strength (the ``edits`` field)
    align: Align = "auto"
    faces: Faces = "largest"
    size: Size = "native"
    format: Format = "jpeg"
    shard: int = 0
    num_shards: int = 1
    model_zoo: Path | None = None
    progress: bool = True


class ResultRow(BaseModel):
    """One input's line in ``results.jsonl``: the output or the service's error code, faces found, stage timings."""

    source: str
    status: Literal["ok", "error"]
    error: str | None = None  # the HTTP API's code (``not_an_image``, ``no_face``, ``too_many_pixels``, ...)
    message: str | None = None
    http_status: int | None = None  # the status /transform answers with
    outputs: list[str] = []  # relative to OUT
    faces: int | None = None  # faces found and edited (FFHQ-aligned models)
    domain: str | None = (
        None  # X-Distill-Domain: "inside" or "outside; age 0.12 below 0.20"; None: not checked
    )
    timings_ms: dict[str, float] = {}

    def finished(self, out: Path) -> bool:
        """Whether a re-run skips this input: done with its outputs in place, or refused for good (4xx)."""
        if self.status == "ok":
            return all((out / name).is_file() for name in self.outputs)
        return self.http_status is not None and self.http_status < 500


@dataclass(frozen=True)
class Source:
    """An input file and the name of its output under OUT."""

    path: Path
    output: str


@dataclass
class Summary:
    """What one run did: inputs edited, skipped as done before, errors by code; the results file."""

    done: int = 0
    skipped: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    results: Path = Path(RESULTS)

    def line(self) -> str:
        errors = sum(self.errors.values())
        by_code = ", ".join(f"{code} {n}" for code, n in sorted(self.errors.items()))
        return (
            f"{self.results}: {self.done} done, {self.skipped} skipped (done before), "
            f"{errors} error{'' if errors == 1 else 's'}" + (f" ({by_code})" if by_code else "")
        )


def list_sources(inputs: tuple[Path, ...], out: Path, fmt: Format) -> list[Source]:
    """The input files, sorted: files as given, folders searched recursively (hidden files and OUT left out);
    each output named after the file (its path under a folder argument) with ``fmt``'s suffix. DistillError
    for a missing input or two inputs that would write one output."""
    out = out.resolve()
    sources: dict[str, Path] = {}
    for given in inputs:
        if given.is_file():
            found = [(given, Path(given.name))]
        elif given.is_dir():
            found = [
                (p, p.relative_to(given))
                for p in sorted(given.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(given).parts)
                and out not in p.resolve().parents
            ]
        else:
            raise DistillError(f"{given}: no such file or folder")
        for path, rel in found:
            name = rel.with_suffix(SUFFIXES[fmt]).as_posix()
            if name in sources and sources[name].resolve() != path.resolve():
                raise DistillError(
                    f"{sources[name]} and {path} would both write {out / name}; run them into separate --out folders"
                )
            sources[name] = path
    return sorted((Source(path, name) for name, path in sources.items()), key=lambda s: str(s.path))


def shard_sources(sources: list[Source], shard: int, num_shards: int) -> list[Source]:
    """This shard's inputs: every ``num_shards``-th of the sorted list from ``shard``; DistillError when out of range."""
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise DistillError(f"--shard {shard} --num-shards {num_shards}: need 0 <= shard < num-shards")
    return sources[shard::num_shards]


def row_path(out: Path, source: Path) -> Path:
    """Where ``source``'s row is kept (named by its absolute path, so re-runs from elsewhere find it)."""
    key = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:32]
    return out / ROWS / f"{key}.json"


def read_row(path: Path) -> ResultRow | None:
    """The row at ``path``; None when there is none."""
    try:
        return ResultRow.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def write_results(out: Path) -> Path:
    """Rewrite ``OUT/results.jsonl`` (atomically) from every row under ``OUT/.rows``, sorted by source."""
    rows = [ResultRow.model_validate_json(p.read_text(encoding="utf-8")) for p in (out / ROWS).glob("*.json")]
    rows.sort(key=lambda r: r.source)
    return atomic_write_text(out / RESULTS, "".join(r.model_dump_json() + "\n" for r in rows))


def read_input(path: Path, max_bytes: int) -> bytes:
    """The file's bytes, at most one past ``max_bytes`` (enough for the upload check to refuse it as too large)."""
    with path.open("rb") as f:
        return f.read(max_bytes + 1)


async def load_service(model: str, model_zoo: Path | None) -> tuple[Service, LoadedModel]:
    """A service with ``model`` only, started as ``distill serve`` starts it (no legacy path); DistillError
    with the reason when it cannot load."""
    settings = Settings.from_env()
    settings = settings.replace(
        models=(model,),
        default_model=model,
        legacy_workers=0,
        model_zoo=model_zoo or settings.model_zoo,
    )
    select_entries(settings)  # an unknown or damaged entry: its one-line reason, before the service logs it
    service = Service(settings)
    await service.start()
    if service.load_error is not None:
        await service.stop()
        raise DistillError(f"model {model}: {service.load_error}")
    return service, service.get_model(model)


def check_options(loaded: LoadedModel, opts: TransformOptions) -> np.ndarray | None:
    """The strengths [K] to run at; the options the service would refuse for every input as a DistillError."""
    try:
        if aligned(loaded, opts.align):
            face_path.check_request(opts.size, opts.faces)
        return resolve_edits(loaded.entry.spec, loaded.runtime.name, opts.strength, opts.edits)
    except ServiceError as e:
        raise DistillError(e.detail) from None


async def transform_one(
    service: Service,
    loaded: LoadedModel,
    source: Source,
    opts: TransformOptions,
    strength: np.ndarray | None,
) -> ResultRow:
    """Edit one file as ``/transform`` would answer it and write the output atomically; the row says how it went."""
    timer = StageTimer()
    runtime = loaded.runtime
    faces: int | None = None
    domain: str | None = None
    try:
        with timer.stage("read"):
            data = await asyncio.to_thread(read_input, source.path, service.settings.max_upload_bytes)
        upload, xs, verdict = await asyncio.to_thread(
            frame_inputs,
            service,
            data,
            runtime.native_hw,
            opts.size,
            timer,
            fmt=opts.format,
            align=aligned(loaded, opts.align),
            faces=opts.faces,
            domain=loaded.domain,
        )
        domain = None if verdict is None else verdict.text()
        if isinstance(upload, face_path.AlignedUpload):
            faces = len(upload.faces)
        results = await edit_inputs(loaded, xs, strength, timer)
        content = await asyncio.to_thread(
            finish_output,
            [r.output for r in results],
            upload,
            opts.size,
            opts.format,
            service.settings.output_quality,
            timer,
        )
        with timer.stage("write"):
            await asyncio.to_thread(atomic_write_bytes, opts.out / source.output, content)
    except ServiceError as e:
        return ResultRow(
            source=str(source.path),
            status="error",
            error=e.error,
            message=e.detail,
            http_status=e.status_code,
            faces=faces,
            domain=e.headers.get(DOMAIN_HEADER, domain),
            timings_ms=timings_ms(timer),
        )
    except OSError as e:  # the input cannot be read, or the output not written
        return ResultRow(
            source=str(source.path), status="error", error="io_error", message=str(e), http_status=500
        )
    except Exception as e:  # the service's 500: recorded (retried by the next run), the others go on
        return ResultRow(
            source=str(source.path),
            status="error",
            error="internal_error",
            message=f"{type(e).__name__}: {e}",
            http_status=500,
        )
    return ResultRow(
        source=str(source.path),
        status="ok",
        outputs=[source.output],
        faces=faces,
        domain=domain,
        timings_ms=timings_ms(timer),
    )


def timings_ms(timer: StageTimer) -> dict[str, float]:
    return {name: round(seconds * 1000, 2) for name, seconds in timer.stages.items()}


async def run_transform(opts: TransformOptions) -> Summary:
    """Edit this shard's inputs not done before, several at once; rows and ``results.jsonl`` as described above.
    The model is loaded and the options checked even when every input is done (a usage error is one always)."""
    sources = shard_sources(list_sources(opts.inputs, opts.out, opts.format), opts.shard, opts.num_shards)
    summary = Summary(results=opts.out / RESULTS)
    service, loaded = await load_service(opts.model, opts.model_zoo)
    try:
        strength = check_options(loaded, opts)
        todo = []
        for source in sources:
            row = read_row(row_path(opts.out, source.path))
            if row is not None and row.finished(opts.out):
                summary.skipped += 1
            else:
                todo.append(source)
        (opts.out / ROWS).mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(todo), unit="img", desc=opts.model, disable=not opts.progress)
        pending: Iterator[Source] = iter(todo)

        async def worker() -> None:
            for source in pending:  # one event loop: the workers share the iterator safely
                row = await transform_one(service, loaded, source, opts, strength)
                atomic_write_text(row_path(opts.out, source.path), row.model_dump_json())
                if row.status == "ok":
                    summary.done += 1
                else:
                    summary.errors[row.error or "error"] += 1
                    bar.set_postfix(errors=sum(summary.errors.values()))
                bar.update()

        try:
            # as many in flight as one micro-batch holds, so the batcher fills its batches
            await asyncio.gather(*(worker() for _ in range(max(1, service.settings.max_batch))))
        finally:
            bar.close()
    finally:
        await service.stop()
    write_results(opts.out)
    return summary


def transform_files(opts: TransformOptions) -> Summary:
    """:func:`run_transform` on its own event loop."""
    return asyncio.run(run_transform(opts))


async def _edit_photos(model: str, model_zoo: Path, files: list[Path]) -> tuple[list[EditedPhoto], str]:
    service, loaded = await load_service(model, model_zoo)
    runtime = loaded.runtime
    engine = (
        f"{runtime.engine_name} {runtime.variant} on {runtime.provider} (chosen as `distill serve` chooses)"
    )
    photos = []
    try:
        strength = resolve_strengths(loaded, None, None)
        for file in tqdm(files, desc="photos, student", unit="photo"):
            timer = StageTimer()
            try:
                upload, xs, _ = await asyncio.to_thread(
                    frame_inputs,
                    service,
                    file.read_bytes(),
                    runtime.native_hw,
                    "original",
                    timer,
                    fmt="png",
                    align=True,
                    faces="all",
                )
                results = await edit_inputs(loaded, xs, strength, timer)
            except ServiceError as e:
                photos.append(EditedPhoto(file, error=f"{e.error}: {e.detail}"))
                continue
            assert isinstance(upload, face_path.AlignedUpload)
            edited = [from_output(r.output) for r in results]
            output = face_path.restore(edited, upload, "original", timer)
            photos.append(
                EditedPhoto(file, upload.photo, upload.faces, upload.crops, upload.alignments, output, edited)
            )
    finally:
        await service.stop()
    return photos, engine


def edit_photos(model: str, model_zoo: Path, files: list[Path]) -> tuple[list[EditedPhoto], str]:
    """Every photo through the face path (every face FFHQ-aligned at the model's size, also for an
    ``alignment: none`` entry, edited at the model's default strength, pasted back) of a service loaded as
    ``distill serve`` loads ``model``; (the photos, the engine's description). A :data:`PhotoEditor`."""
    return asyncio.run(_edit_photos(model, model_zoo, files))
