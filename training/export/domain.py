"""The entry's ``domain``: the scorer and keep ranges of ``distill filter`` that defined the student's inputs.

The filter report (``filter_report.json`` beside the pairs) names every scorer with its preprocessing and keep
ranges. The ranges on the originals (``on: a`` or ``both``) of one ONNX scorer are the domain the student
learnt: export copies that scorer into the entry (:data:`DOMAIN_SCORER`) and records them in the manifest, and
the service checks every framed input against them. Ranges on the edited images only (``on: b``) judge the
teacher's outputs, not the student's inputs, and are left out; so are scorers that are not ONNX models (the
face detector: the service frames faces its own way). ``names`` picks the ranges when not all of them define
the domain (the toy recipe keeps ``age`` and leaves ``quality``, a check on the teacher's glitches, out).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import DistillError
from model_zoo.registry import ModelEntry, load_entry, write_entry
from model_zoo.schema import Domain, provenance, resolve_provenance
from training.filters.report import REPORT
from training.onnx_scorer import OnnxScorer

DOMAIN_SCORER = "domain_scorer.onnx"
FILTER_REPORT = f"{REPORT}.json"


def _scorer_path(text: str, report: Path) -> Path:
    """The scorer a report names: as written (from where the filter ran), from the project root, else beside it."""
    for path in (Path(text), resolve_provenance(text), report.parent / text):
        if path.is_file():
            return path
    raise DistillError(
        f"{report}: its scorer {text} is not found (from here, the project root or {report.parent}); "
        "put it back or run the export from where `distill filter` ran"
    )


def domain_from_report(report: Path, names: Sequence[str] | None = None) -> tuple[Path, Domain] | None:
    """(the scorer file, its ``domain`` record) from a filter report; None when it has no range on the originals
    from an ONNX scorer. ``names`` picks the ranges (default: all of them); DistillError when a name has no
    such range, or the ranges span several scorers."""
    try:
        scorers = json.loads(report.read_text(encoding="utf-8"))["scorers"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DistillError(f"{report}: not a readable filter report ({e}); re-run `distill filter`") from e
    found = [
        s
        for s in scorers
        if s.get("type") == "onnx" and s.get("on", "both") in ("a", "both") and s.get("keep")
    ]
    picked = [(s, {k: v for k, v in s["keep"].items() if names is None or k in names}) for s in found]
    picked = [(s, keep) for s, keep in picked if keep]
    missing = sorted(set(names or ()) - {k for _, keep in picked for k in keep})
    if missing:
        raise DistillError(
            f"--domain {', '.join(missing)}: {report} has no keep range of that name on the originals "
            f"from an ONNX scorer (it has: {', '.join(k for s in found for k in s['keep']) or 'none'})"
        )
    if not picked:
        return None
    if len(picked) > 1:
        raise DistillError(
            f"{report}: keep ranges from {len(picked)} scorers; name those of one with --domain NAME"
        )
    spec, keep = picked[0]
    path = _scorer_path(spec["path"], report)
    outputs = {k: int(spec["outputs"][k]) for k in keep}
    scorer = OnnxScorer(  # the filter's own checks: the file loads, takes RGB, and the size is known
        path,
        outputs,
        input_size=spec.get("input_size"),
        mean=spec.get("mean", (0.5,)),
        std=spec.get("std", (0.5,)),
        activation=spec.get("activation", "none"),
        providers=["CPUExecutionProvider"],
    )
    record: dict[str, Any] = {
        "scorer": DOMAIN_SCORER,
        "input_size": list(scorer.input_size),
        "mean": [float(v) for v in spec.get("mean", (0.5,))],
        "std": [float(v) for v in spec.get("std", (0.5,))],
        "activation": scorer.activation,
        "outputs": outputs,
        "keep": {k: list(v) for k, v in keep.items()},
        "source": provenance(report.resolve()),
    }
    return path, Domain.model_validate(record)


def copy_domain(report: Path, dest: Path, names: Sequence[str] | None = None) -> Domain | None:
    """:func:`domain_from_report`, its scorer copied into the entry folder ``dest``; None when there is none."""
    found = domain_from_report(report, names)
    if found is None:
        return None
    path, domain = found
    shutil.copyfile(path, dest / domain.scorer)
    return domain


def add_domain(entry_dir: Path, report: Path, names: Sequence[str] | None = None) -> ModelEntry:
    """Record the domain of ``report`` in an existing entry (its scorer copied in, the manifest rewritten with the
    scorer's checksum), as ``distill export`` would have: for entries exported before domains were recorded."""
    entry = load_entry(entry_dir)
    domain = copy_domain(report, entry_dir, names)
    if domain is None:
        raise DistillError(
            f"{report}: no keep range on the originals from an ONNX scorer; no domain to record"
        )
    spec = entry.spec.model_copy(update={"domain": domain})
    return write_entry(entry_dir, spec, files=[*spec.files, domain.scorer])
