"""The model zoo: exported students as folders, each described by a checksummed ``manifest.json``.

An entry is a folder holding ``manifest.json`` (folders without one are not entries)::

    model_zoo/NAME/manifest.json   what the model does, its input contract, sha256 of every file
    model_zoo/NAME/model.onnx      the fp32 student (variants beside it: model.fp16.onnx, model.int8.onnx)
    model_zoo/NAME/preview.png     input | student | teacher target
    model_zoo/NAME/teacher.pt      the StyleGAN2 teacher and ...
    model_zoo/NAME/direction.npy   ... the latent direction, for the legacy (projection) endpoint

``get_entry`` verifies the size and sha256 of every file the manifest lists before anything loads
it, so a truncated copy or a flipped byte is refused with the file's name instead of surfacing as
an obscure ONNX Runtime error (or, worse, as silently wrong pictures). Only listed files are ever
loaded or served (:meth:`ModelEntry.listed`); other files in the folder (reports) are ignored, and a
symbolic link anywhere in the entry that leads out of its folder fails verification.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from core.atomic import atomic_write_json
from core.errors import DistillError
from core.hashing import sha256_file
from model_zoo.schema import Alignment, EntryManifest, FileRecord, check_entry_path, parse_manifest

MANIFEST = "manifest.json"
ENV_ROOT = "DISTILL_MODEL_ZOO"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ENTRY_FILE_MODE = 0o644

InputAlignment = Alignment
ALIGNMENTS: tuple[str, ...] = get_args(InputAlignment)


class ModelZooError(DistillError):
    """A model-zoo entry is missing, malformed, corrupt or truncated; the message names the file and the fix."""


SHIPPED_ROOT = Path(__file__).resolve().parent
LOCAL_ZOO = "model_zoo"  # a zoo in the current folder, as `distill export RUN --out model_zoo/NAME` makes one


def zoo_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The folders a bare entry name is looked up in, in order: ``root`` (``--model-zoo``) or
    ``$DISTILL_MODEL_ZOO`` alone when given; else ``./model_zoo`` of the current folder (when it exists),
    then the shipped zoo, so the README's own exports and the shipped default both resolve from any folder."""
    explicit = root if root is not None else os.environ.get(ENV_ROOT) or None
    if explicit is not None:
        return [Path(explicit)]
    local = Path.cwd() / LOCAL_ZOO
    if local.is_dir() and local.resolve() != SHIPPED_ROOT:
        return [local, SHIPPED_ROOT]
    return [SHIPPED_ROOT]


def default_root() -> Path:
    """The first zoo folder of :func:`zoo_roots`: where a new entry is expected to go."""
    return zoo_roots()[0]


def _reexport_hint(folder: Path) -> str:
    return f"re-export it with `distill export RUN --out {folder}`"


@dataclass(frozen=True)
class ModelEntry:
    """One zoo entry: its folder name, its folder, and its validated manifest (:class:`EntryManifest`)."""

    name: str
    path: Path
    spec: EntryManifest

    @property
    def zoo(self) -> Path:
        """The zoo folder the entry came from (its folder's parent)."""
        return self.path.parent

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as JSON (a fresh copy), as written to manifest.json."""
        return self.spec.to_json()

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        """Variant name ("fp32", "fp16", "int8") -> its manifest record (file, providers, measured error/speed)."""
        return self.manifest["variants"]

    def variant_path(self, variant: str = "fp32") -> Path:
        """The ONNX file of ``variant``; a clear error naming the available variants when absent."""
        variants = self.spec.variants
        if variant not in variants:
            raise ModelZooError(
                f"{self.path / MANIFEST}: model {self.name!r} has no {variant!r} variant; "
                f"available: {', '.join(sorted(variants))}"
            )
        return self.path / variants[variant].file

    @property
    def input_size(self) -> tuple[int, int]:
        """The native (training) input size as (H, W)."""
        return self.spec.input.size

    @property
    def stride(self) -> int:
        """Input H and W must be multiples of this."""
        return self.spec.input.stride

    @property
    def alignment(self) -> InputAlignment:
        """How the model expects its input framed: ``ffhq`` (FFHQ-aligned faces) or ``none`` (as given).

        Manifests written before the field existed have none: they load as ``none``.
        """
        return self.spec.input.alignment

    @property
    def teacher_path(self) -> Path | None:
        """The StyleGAN2 teacher checkpoint copied into the entry, or None when it was not known at export."""
        return self._optional_file("teacher")

    @property
    def direction_path(self) -> Path | None:
        """The latent direction copied into the entry, or None when it was not known at export."""
        return self._optional_file("direction")

    def _optional_file(self, key: str) -> Path | None:
        record = getattr(self.spec, key)
        return self.path / record.file if record else None

    def contains(self, path: Path) -> bool:
        """Whether ``path``, with every symbolic link followed, lies inside the entry's folder."""
        return path.resolve().is_relative_to(self.path.resolve())

    def listed(self, folder: str) -> list[Path]:
        """The files the manifest lists under ``folder/`` (e.g. ``samples``), sorted: the only ones served from it."""
        prefix = folder.rstrip("/") + "/"
        return sorted(self.path / fname for fname in self.spec.files if fname.startswith(prefix))

    def unlisted(self) -> list[Path]:
        """Files in the entry's folder that the manifest does not list (reports, strays): never loaded or served."""
        listed = {self.path / fname for fname in self.spec.files} | {self.path / MANIFEST}
        return sorted(p for p in self.path.rglob("*") if (p.is_file() or p.is_symlink()) and p not in listed)

    def escaping_links(self) -> list[Path]:
        """Symbolic links inside the entry whose target lies outside its folder (or nowhere)."""
        return sorted(
            p for p in self.path.rglob("*") if p.is_symlink() and not (p.exists() and self.contains(p))
        )

    def verify(self) -> None:
        """Check the byte size and sha256 of every file in ``manifest["files"]`` and refuse symbolic links that
        leave the entry; ModelZooError on the first problem, a file or folder this user cannot read included."""
        try:
            self._verify()
        except OSError as e:
            where = e.filename if e.filename is not None else self.path
            raise ModelZooError(
                f"{where}: {e.strerror or e}; give this user read access to it (and search access to its "
                f"folders), or {_reexport_hint(self.path)}"
            ) from None

    def _verify(self) -> None:
        for link in self.escaping_links():
            raise ModelZooError(
                f"{link}: a symbolic link leading out of model {self.name!r} (to {os.readlink(link)}); "
                "delete it (an entry holds its files itself)"
            )
        for fname, record in self.spec.files.items():
            path = self.path / fname
            if not path.is_file():
                raise ModelZooError(f"{path}: missing from model {self.name!r}; {_reexport_hint(self.path)}")
            size = path.stat().st_size
            if size != record.bytes:
                raise ModelZooError(
                    f"{path}: {size} bytes, the manifest says {record.bytes} (truncated or replaced); "
                    f"{_reexport_hint(self.path)}"
                )
            if sha256_file(path) != record.sha256:
                raise ModelZooError(
                    f"{path}: sha256 does not match the manifest (the file is corrupt); {_reexport_hint(self.path)}"
                )


def validate_manifest(manifest: Any) -> EntryManifest:
    """The typed manifest of a parsed manifest.json (older versions migrated); ValueError naming the first problem."""
    try:
        return parse_manifest(manifest)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "manifest"
        raise ValueError(f"{where}: {err['msg']}") from None


def load_entry(folder: str | os.PathLike) -> ModelEntry:
    """Read and validate ``folder/manifest.json`` (no checksum verification)."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ModelZooError(f"{path}: no manifest here; {_reexport_hint(folder)}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelZooError(f"{path}: unreadable manifest ({e}); {_reexport_hint(folder)}") from e
    except RecursionError:
        raise ModelZooError(
            f"{path}: unreadable manifest (JSON nested too deeply); {_reexport_hint(folder)}"
        ) from None
    try:
        spec = validate_manifest(manifest)
    except ValueError as e:
        raise ModelZooError(f"{path}: malformed manifest: {e}; fix it or {_reexport_hint(folder)}") from e
    return ModelEntry(name=folder.name, path=folder, spec=spec)


def _entry_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    # hidden folders are exports in progress (distill export stages entries in .NAME.export-tmp)
    return sorted(
        p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


def list_entries(root: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Every entry of the zoo folders :func:`zoo_roots` gives for ``root``, sorted by name (a name in an earlier
    folder hides the same name in a later one); manifests validated, files not hashed. ``entry.zoo`` says
    which folder each came from."""
    found: dict[str, Path] = {}
    for folder in zoo_roots(root):
        for p in _entry_dirs(folder):
            found.setdefault(p.name, p)
    return [load_entry(found[name]) for name in sorted(found)]


def get_entry(name: str, root: str | os.PathLike | None = None, verify: bool = True) -> ModelEntry:
    """The entry called ``name`` in the first of :func:`zoo_roots` that has it, with every file's size and
    sha256 checked when ``verify``.

    An unknown name lists the folders searched and the available entries; a missing, truncated or corrupt file
    names the file.
    """
    roots = zoo_roots(root)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ModelZooError(
            f"{name!r} is not a model name (letters, digits, '.', '_', '-'); {_available(roots)}"
        )
    folder = next((r / name for r in roots if (r / name / MANIFEST).is_file()), None)
    if folder is None:
        searched = " or ".join(str(r) for r in roots)
        raise ModelZooError(
            f"no model {name!r} in {searched}; {_available(roots)} (another zoo: --model-zoo DIR or "
            f"{ENV_ROOT}=DIR)"
        )
    entry = load_entry(folder)
    if verify:
        entry.verify()
    return entry


def _available(roots: list[Path]) -> str:
    names = sorted({p.name for r in roots for p in _entry_dirs(r)})
    if not names:
        return f"the zoo at {roots[0]} is empty (create an entry with `distill export RUN --out {roots[0]}/NAME`)"
    return f"available: {', '.join(names)}"


def file_records(dest_dir: str | os.PathLike, files: Iterable[str]) -> dict[str, FileRecord]:
    """Size and sha256 of ``files`` (names relative to ``dest_dir``), made world-readable (atomic writes create
    0600 files; the service may run as another user)."""
    dest = Path(dest_dir)
    records: dict[str, FileRecord] = {}
    for fname in files:
        try:
            check_entry_path(fname)
        except ValueError as e:
            raise ModelZooError(f"write_entry files: {e}") from None
        path = dest / fname
        if not path.is_file():
            raise ModelZooError(f"{path}: listed for the manifest but not written")
        records[str(fname)] = FileRecord(sha256=sha256_file(path), bytes=path.stat().st_size)
        path.chmod(ENTRY_FILE_MODE)
    return records


def write_entry(
    dest_dir: str | os.PathLike, manifest: EntryManifest | dict[str, Any], files: Iterable[str] | None = None
) -> ModelEntry:
    """Write ``dest_dir/manifest.json`` atomically, with ``files`` (names relative to ``dest_dir``) checksummed
    into its ``files`` (default: the records ``manifest`` already has).

    The manifest is validated before it is written, so a zoo never holds an entry the registry would refuse.
    """
    dest = Path(dest_dir)
    data = manifest.to_json() if isinstance(manifest, EntryManifest) else copy.deepcopy(manifest)
    if files is not None:
        data["files"] = {k: v.model_dump() for k, v in file_records(dest, files).items()}
    try:
        spec = validate_manifest(data)
    except ValueError as e:
        raise ModelZooError(f"{dest / MANIFEST}: refusing to write a malformed manifest: {e}") from e
    atomic_write_json(dest / MANIFEST, spec.to_json()).chmod(ENTRY_FILE_MODE)
    return ModelEntry(name=dest.name, path=dest, spec=spec)
