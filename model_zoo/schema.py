"""The model-zoo entry: the one typed contract between training (``distill export``) and serving.

``manifest.json`` is an :class:`EntryManifest`. ``distill export`` builds one and writes it through
:func:`model_zoo.registry.write_entry`; the service, the legacy path, ``distill evaluate`` and
``distill models`` read it through :func:`model_zoo.registry.load_entry`, which migrates older manifests
(:func:`migrate`) before validating them. ``distill models schema`` prints the JSON Schema
(``docs/model_zoo_entry.schema.json``).

Rules every entry follows:

- file names (``variants.*.file``, ``teacher.file``, ``files`` keys, ...) are relative to the entry folder;
- provenance (``teacher.source``, ``direction.source``, ``data.dataset``, ``training.checkpoint``) is never an
  absolute path of the machine that built the entry: a path relative to the project root when it lay inside
  it, else the bare file name (the copied files' sha256 are in ``files``);
- the edit (attribute, strength, W+ layers) is said once, in ``edit``; an entry that ships a direction must
  give its strength and layers there (the legacy path has no defaults);
- ``edits`` lists every edit as :class:`EditSpec`; a one-edit entry need not write it: it is derived on read
  from ``edit``, ``direction`` and ``strength``, so code asks any entry for its edits the same way.
  A student of K edits writes all K and no ``strength``: its ONNX ``strength`` input is [N, K] in that order.

Records accept fields they do not know (a newer writer's additions reach an older reader unharmed).
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def check_entry_path(name: str) -> str:
    """``name`` if it is a non-empty path inside the entry folder; ValueError otherwise."""
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"{name!r} must be a path inside the entry folder")
    return name


def provenance(path: str | Path, root: Path = PROJECT_ROOT) -> str:
    """How an entry names a file or folder outside it: relative to ``root`` (the project) when inside, else
    its bare name. Never an absolute path of the building machine."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return p.name


def dataset_provenance(path: str | Path, entry_dir: str | Path, root: Path = PROJECT_ROOT) -> str:
    """How an entry names its pair dataset: relative to ``root`` (the project) when inside, else relative to
    the entry's folder (``../../data/age`` for ``model_zoo/age`` beside ``data/age``), so `distill evaluate`
    finds it again wherever the two folders move together. Never absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(os.path.relpath(p, Path(entry_dir).resolve())).as_posix()


def resolve_provenance(text: str, root: Path = PROJECT_ROOT) -> Path:
    """The path a provenance string names on this machine: relative ones against ``root`` (the project)."""
    return root / text if not Path(text).is_absolute() else Path(text)


def _no_absolute(value: str) -> str:
    if Path(value).is_absolute() or PurePosixPath(value).is_absolute():
        raise ValueError(f"{value!r}: an absolute build path; record it with model_zoo.schema.provenance()")
    return value


Alignment = Literal["ffhq", "none"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
EntryPath = Annotated[str, AfterValidator(check_entry_path)]  # a file inside the entry folder
Provenance = Annotated[str, AfterValidator(_no_absolute)]  # where a build input came from, never absolute


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Edit(BaseModel):
    """What the model does: the attribute, the edit strength along the direction, and the W+ layers
    ``[start, stop)`` moved (written ``[start, stop]``)."""

    model_config = ConfigDict(extra="forbid")

    attribute: str | None = None
    alpha: float | None = None
    layers: tuple[int, int] | None = None

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and not 0 <= value[0] < value[1]:
            raise ValueError(f"layers must be [start, stop) with 0 <= start < stop, got {list(value)}")
        return value


STRENGTH_INPUT = "strength"  # the ONNX input name of a strength-conditioned model (StrengthSpec.name)


class StrengthSpec(_Record):
    """A conditional model's second ONNX input: a relative edit strength per image, float32 [N].

    Strength ``s`` stands for the latent edit ``w + s * edit.alpha * d`` (``units`` "relative": 1.0 = the
    edit's alpha, 0 = the input unchanged, negative = the opposite edit); ``range`` is what the model was
    trained on (the service refuses strengths outside it), ``default`` what a request without one gets.
    """

    name: str = STRENGTH_INPUT
    dtype: Literal["float32"] = "float32"
    shape: Literal["[N]"] = "[N]"
    units: Literal["relative"] = "relative"
    meaning: str = "w + strength * edit.alpha * direction: 1.0 = edit.alpha, 0 = the input unchanged"
    range: tuple[float, float]
    default: float = 1.0

    @model_validator(mode="after")
    def _in_range(self) -> StrengthSpec:
        low, high = self.range
        if not low < high:
            raise ValueError(f"strength.range {list(self.range)} must be [low, high] with low < high")
        if not low <= self.default <= high:
            raise ValueError(
                f"strength.default {self.default} lies outside strength.range {list(self.range)}"
            )
        return self


class EditSpec(_Record):
    """One latent edit a model applies, in the one record multi-edit and one-edit entries share.

    ``direction`` is the edit's direction file in the entry (None: not shipped), ``alpha`` the latent strength
    that relative strength 1.0 means, ``layers`` the W+ layers ``[start, stop)``, ``range`` the relative
    strengths the model was trained on (None: one fixed strength, ``default``) and ``default`` what a request
    without one gets. A one-edit entry's ``edit``, ``direction`` and ``strength`` records are the case of one
    (:attr:`EntryManifest.edits` derives it on read).
    """

    attribute: str | None = None
    direction: EntryPath | None = None
    alpha: float | None = None
    layers: tuple[int, int] | None = None
    range: tuple[float, float] | None = None
    default: float = 1.0

    @model_validator(mode="after")
    def _consistent(self) -> EditSpec:
        if self.layers is not None and not 0 <= self.layers[0] < self.layers[1]:
            raise ValueError(f"layers must be [start, stop) with 0 <= start < stop, got {list(self.layers)}")
        if self.range is not None:
            low, high = self.range
            if not low < high:
                raise ValueError(f"edit range {list(self.range)} must be [low, high] with low < high")
            if not low <= self.default <= high:
                raise ValueError(f"edit default {self.default} lies outside its range {list(self.range)}")
        return self


class InputSpec(_Record):
    """The ONNX input: NCHW float32 in ``range``, H and W multiples of ``stride``, native size ``size``."""

    name: str = "input"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    size: tuple[PositiveInt, PositiveInt]
    channels: PositiveInt = 3
    range: tuple[float, float] = (-1.0, 1.0)
    stride: PositiveInt
    size_source: str | None = None
    alignment: Alignment = "none"
    normalization: str | None = None

    @model_validator(mode="after")
    def _geometry(self) -> InputSpec:
        h, w = self.size
        if h % self.stride or w % self.stride:
            raise ValueError(f"input.size {[h, w]} is not a multiple of input.stride {self.stride}")
        if self.alignment == "ffhq" and h != w:
            raise ValueError(f"input.alignment 'ffhq' crops square faces; input.size {[h, w]} is not square")
        return self


class OutputSpec(_Record):
    """The ONNX output: same layout as the input, in ``range``."""

    name: str = "output"
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    range: tuple[float, float] = (-1.0, 1.0)
    denormalization: str | None = None


class Variant(_Record):
    """One ONNX file of the model (fp32, fp16, int8) with its providers and measured error and speed."""

    file: EntryPath
    providers: list[str] = Field(default_factory=list)
    median_ms: float | None = None
    timed_size: tuple[int, int] | None = None
    measured_on: str | None = None
    psnr_vs_fp32_db: float | None = None
    psnr_vs_fp32_min_db: float | None = None
    max_abs_diff_vs_fp32: float | None = None
    min_psnr_db: float | None = None
    error_images: int | None = None
    error_inputs: str | None = None
    error_measured_with: str | None = None
    calibration_images: int | None = None
    calibration_method: str | None = None


class RefusedVariant(_Record):
    """A variant left out because its PSNR against fp32 fell below the bound."""

    psnr_vs_fp32_db: float
    min_psnr_db: float
    error_images: int | None = None


class EngineTiming(_Record):
    """One inference engine's measured speed (and error against fp32) on one variant."""

    engine: str
    variant: str
    precision: str
    median_ms: float
    psnr_vs_fp32_db: float | None = None
    timed_size: tuple[int, int]
    measured_on: str


class Teacher(_Record):
    """The StyleGAN2 teacher shipped for the legacy (projection) endpoint."""

    file: EntryPath
    source: Provenance | None = None
    z_dim: int | None = None
    w_dim: int | None = None
    num_ws: int | None = None


class Direction(_Record):
    """The latent direction shipped for the legacy endpoint (strength and layers are in ``edit``)."""

    file: EntryPath
    normalize: bool = False
    method: str | None = None
    source: Provenance | None = None

    @model_validator(mode="after")
    def _edit_elsewhere(self) -> Direction:
        misplaced = sorted({"alpha", "layers"} & set(self.model_extra or {}))
        if misplaced:
            raise ValueError(f"direction.{misplaced[0]}: the edit's strength and layers belong in 'edit'")
        return self


class Data(_Record):
    """The pair dataset the student learnt from."""

    dataset: Provenance | None = None
    pairs_total: int | None = None
    pairs_kept: int | None = None
    train_pairs: int | None = None
    heldout_pairs: int | None = None
    teacher_resolution: int | None = None
    eval_inputs: str | None = None


class Training(_Record):
    """The training run: checkpoint, generator config, progress and its last held-out metrics."""

    checkpoint: Provenance | None = None
    checkpoint_sha256: Sha256 | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    parameters: int | None = None
    preset: str | None = None
    status: str | None = None
    epoch: int | None = None
    global_step: int | None = None
    total_epochs: int | None = None
    init: Provenance | None = None  # the generator weights the run started from (`distill train --init`)
    heldout: dict[str, float | int] = Field(default_factory=dict)


class Preview(_Record):
    """preview.png: input | student | teacher target rows."""

    file: EntryPath
    columns: list[str] = Field(default_factory=list)
    rows: int | None = None
    inputs: str | None = None


class Domain(_Record):
    """The inputs the student was trained on, as ``distill filter`` kept them: a scorer shipped in the entry and
    the keep ranges on its scores (inclusive; either bound may be None). The service scores each framed input
    with it, preprocessed as the filter did: bilinear resize to ``input_size``, ``(x/255 - mean) / std`` per
    channel, ``activation`` on the first output, the named columns picked by index."""

    scorer: EntryPath
    input_size: tuple[PositiveInt, PositiveInt]
    mean: list[float] = Field(default_factory=lambda: [0.5], min_length=1, max_length=3)
    std: list[float] = Field(default_factory=lambda: [0.5], min_length=1, max_length=3)
    activation: Literal["none", "sigmoid", "softmax"] = "none"
    outputs: dict[str, int] = Field(min_length=1)  # score name -> column of the scorer's first output
    keep: dict[str, tuple[float | None, float | None]] = Field(min_length=1)
    source: Provenance | None = None  # the filter report the ranges were read from

    @model_validator(mode="after")
    def _ranges(self) -> Domain:
        for name in ("mean", "std"):
            if len(getattr(self, name)) == 2:
                raise ValueError(f"domain.{name}: give one value or three (R, G, B)")
        if any(v == 0 for v in self.std):
            raise ValueError("domain.std must not be 0")
        for key, (low, high) in self.keep.items():
            if key not in self.outputs:
                raise ValueError(f"domain.keep names {key!r}, which is not in domain.outputs")
            if low is None and high is None:
                raise ValueError(f"domain.keep[{key!r}] has no bound")
            if low is not None and high is not None and low > high:
                raise ValueError(f"domain.keep[{key!r}] {[low, high]}: low is above high")
        return self


class FileRecord(BaseModel):
    """Size and sha256 of one file of the entry, checked before anything loads it."""

    model_config = ConfigDict(extra="forbid")

    sha256: Sha256
    bytes: int = Field(ge=0)


class EntryManifest(_Record):
    """``manifest.json`` of a model-zoo entry."""

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(min_length=1)
    description: str = ""
    edit: Edit = Field(default_factory=Edit)
    input: InputSpec
    strength: StrengthSpec | None = (
        None  # a strength-conditioned model's second input; None: one fixed strength
    )
    output: OutputSpec = Field(default_factory=OutputSpec)
    variants: dict[str, Variant]
    refused_variants: dict[str, RefusedVariant] = Field(default_factory=dict)
    engines: list[EngineTiming] | None = None
    teacher: Teacher | None = None
    direction: Direction | None = None
    truncation: float | None = None
    data: Data = Field(default_factory=Data)
    training: Training | None = None
    export: dict[str, Any] | None = None
    preview: Preview | None = None
    domain: Domain | None = None  # the training inputs' domain (from the filter report); None: never checked
    edits: list[EditSpec] = Field(default_factory=list)  # every edit; a one-edit entry's derived on read
    files: dict[EntryPath, FileRecord]

    @field_validator("schema_version", mode="before")
    @classmethod
    def _integer_version(cls, value: Any) -> Any:
        """The version is the JSON integer itself: ``true`` or ``1.0`` equal 1 in Python but are not a version."""
        if type(value) is not int:
            raise ValueError(f"schema_version must be the integer {SCHEMA_VERSION}, not {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EntryManifest:
        if "fp32" not in self.variants:
            raise ValueError("'variants' must have at least an 'fp32' entry")
        listed = [(f"variants[{k!r}].file", v.file) for k, v in self.variants.items()]
        listed += [
            (f"{k}.file", r.file) for k, r in (("teacher", self.teacher), ("direction", self.direction)) if r
        ]
        listed += [(f"edits[{i}].direction", e.direction) for i, e in enumerate(self.edits) if e.direction]
        if self.domain is not None:
            listed.append(("domain.scorer", self.domain.scorer))
        for where, fname in listed:
            if fname not in self.files:
                raise ValueError(f"{where} {fname!r} is not listed in 'files'")
        if self.strength is not None and self.edit.alpha is None:
            raise ValueError(
                "a strength-conditioned entry needs edit.alpha (what strength 1.0 means); "
                "re-export with --alpha A"
            )
        if self.direction is not None and (self.edit.alpha is None or self.edit.layers is None):
            raise ValueError(
                "the entry ships a direction but edit.alpha or edit.layers is missing "
                "(re-export with --alpha A --layers START:STOP)"
            )
        if not self.edits:
            self.edits = self._one_edit()
        return self

    def _one_edit(self) -> list[EditSpec]:
        """The one-edit records (``edit``, ``direction``, ``strength``) as :class:`EditSpec`; [] when they say
        nothing of an edit."""
        if self.edit == Edit() and self.direction is None and self.strength is None:
            return []
        spec = self.strength
        return [
            EditSpec(
                attribute=self.edit.attribute,
                direction=self.direction.file if self.direction else None,
                alpha=self.edit.alpha,
                layers=self.edit.layers,
                range=spec.range if spec else None,
                default=spec.default if spec else 1.0,
            )
        ]

    def direction_edit(self) -> tuple[float, tuple[int, int], bool]:
        """(alpha, [start, stop) W+ layers, normalize) of the shipped direction; ValueError when it ships none."""
        if self.direction is None or self.edit.alpha is None or self.edit.layers is None:
            raise ValueError(
                f"model {self.name!r} ships no direction (the legacy path needs a teacher and a direction)"
            )
        return self.edit.alpha, self.edit.layers, self.direction.normalize

    def to_json(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json`` (unset optional records left out; ``edits`` too when the
        one-edit records say it already, so the edit is said once)."""
        derived = self.edits == self._one_edit()
        return self.model_dump(mode="json", exclude_none=True, exclude={"edits"} if derived else None)


def _migrate_v0(manifest: dict[str, Any]) -> dict[str, Any]:
    """Unversioned manifests: the edit's strength and layers move out of ``direction`` into ``edit`` (the
    direction's figures win, as the legacy path read them), and absolute build paths become provenance."""
    edit = dict(manifest.get("edit") or {})
    direction = manifest.get("direction")
    if isinstance(direction, dict):
        direction = dict(direction)
        for key in ("alpha", "layers"):
            value = direction.pop(key, None)
            if value is not None:
                edit[key] = value
        manifest["direction"] = direction
    manifest["edit"] = {k: edit.get(k) for k in ("attribute", "alpha", "layers")}
    for record, key in (
        ("teacher", "source"),
        ("direction", "source"),
        ("data", "dataset"),
        ("training", "checkpoint"),
    ):
        section = manifest.get(record)
        if isinstance(section, dict) and isinstance(section.get(key), str):
            section[key] = provenance(section[key])
    if manifest.get("data") is None:
        manifest.pop("data", None)
    manifest["schema_version"] = 1
    return manifest


_MIGRATIONS = {0: _migrate_v0}


def migrate(manifest: Any) -> Any:
    """A copy of ``manifest`` (a parsed manifest.json) brought to :data:`SCHEMA_VERSION`; anything that is not
    a JSON object, or of an unknown version, is returned for validation to refuse."""
    if not isinstance(manifest, dict):
        return manifest
    manifest = copy.deepcopy(manifest)
    version = manifest.get("schema_version", 0)
    while type(version) is int and version in _MIGRATIONS:  # not bool: false is no version 0
        manifest = _MIGRATIONS[version](manifest)
        version = manifest["schema_version"]
    return manifest


def parse_manifest(manifest: Any) -> EntryManifest:
    """Migrate and validate a parsed manifest.json; pydantic's ValidationError names the first bad field."""
    return EntryManifest.model_validate(migrate(manifest))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of ``manifest.json``."""
    schema = EntryManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = f"model-zoo entry manifest.json (schema_version {SCHEMA_VERSION})"
    return schema


def json_schema_text() -> str:
    """:func:`json_schema` as the text of ``docs/model_zoo_entry.schema.json``."""
    return json.dumps(json_schema(), indent=2) + "\n"
