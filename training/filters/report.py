"""The filter report: counts and reasons (Markdown + JSON), score histograms and a contact sheet.

Everything is drawn with PIL so the report needs nothing beyond the project's dependencies.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from core.atomic import atomic_write_json, atomic_write_text
from editing.images import load_image, save_image
from training.manifest import PairRecord
from training.scoring import KeepRule

REPORT = "filter_report"
HISTOGRAM = "filter_histogram.png"
CONTACT_SHEET = "filter_rejected.png"

KEPT_RGB = (70, 150, 90)
REJECTED_RGB = (200, 70, 60)
BOUND_RGB = (40, 90, 200)


def reason_counts(rows: list[PairRecord]) -> dict[str, int]:
    """How often each single reason occurs (a row may have several, joined by '; '), most frequent first."""
    c = Counter(part for r in rows if r.keep is False and r.reason for part in r.reason.split("; "))
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def strength_summary(rows: list[PairRecord], bins: int = 6) -> list[dict[str, Any]] | None:
    """Kept and rejected pairs per strength bin (a dataset made with ``--alpha-range``); None at a fixed strength."""
    values = [r.strength for r in rows if r.strength is not None]
    if not values:
        return None
    lo, hi = min(values), max(values)
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1).tolist()
    out = []
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = [
            r
            for r in rows
            if r.strength is not None and (a <= r.strength < b or (i == bins - 1 and r.strength == b))
        ]
        rejected = sum(1 for r in inside if r.keep is False)
        out.append(
            {
                "low": round(a, 4),
                "high": round(b, 4),
                "pairs": len(inside),
                "rejected": rejected,
                "rejection_rate": rejected / len(inside) if inside else 0.0,
            }
        )
    return out


def edit_summary(rows: list[PairRecord]) -> list[dict[str, Any]] | None:
    """Kept and rejected pairs per named edit that is active in them (a multi-edit dataset: a pair with two
    edits counts under both) and for the pairs with none; None on a one-edit dataset."""
    names = list(next((r.edits for r in rows if r.edits), None) or {})
    if not names:
        return None
    out = []
    for name in [*names, None]:
        inside = [r for r in rows if (name in r.active_edits() if name else not r.active_edits())]
        rejected = sum(1 for r in inside if r.keep is False)
        out.append(
            {
                "edit": name,
                "pairs": len(inside),
                "rejected": rejected,
                "rejection_rate": rejected / len(inside) if inside else 0.0,
            }
        )
    return out


def score_summary(rows: list[PairRecord]) -> dict[str, dict[str, float]]:
    keys = sorted({k for r in rows for k in r.scores})
    out = {}
    for k in keys:
        v = np.asarray([r.scores[k] for r in rows if k in r.scores], dtype=np.float64)
        out[k] = {
            "n": int(v.size),
            "min": float(v.min()),
            "p05": float(np.percentile(v, 5)),
            "median": float(np.median(v)),
            "mean": float(v.mean()),
            "p95": float(np.percentile(v, 95)),
            "max": float(v.max()),
        }
    return out


def draw_histograms(rows: list[PairRecord], bounds: dict[str, KeepRule], bins: int = 30) -> np.ndarray:
    """One panel per score: kept (green) and rejected (red) rows stacked per bin, keep bounds in blue."""
    keys = sorted({k for r in rows for k in r.scores})
    pw, ph, margin = 360, 150, 22
    img = Image.new("RGB", (pw, max(1, len(keys)) * ph), "white")
    draw = ImageDraw.Draw(img)
    for i, key in enumerate(keys):
        top = i * ph
        vals = [(r.scores[key], r.keep is not False) for r in rows if key in r.scores]
        v = np.asarray([x for x, _ in vals])
        lo, hi = float(v.min()), float(v.max())
        rule = bounds.get(key.split(".", 1)[-1])
        marks = [b for b in (rule.low, rule.high) if b is not None] if rule is not None else []
        lo, hi = min([lo, *marks]), max([hi, *marks])
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        lo, hi = lo - pad, hi + pad
        edges = np.linspace(lo, hi, bins + 1)
        kept_h, _ = np.histogram([x for x, k in vals if k], bins=edges)
        rej_h, _ = np.histogram([x for x, k in vals if not k], bins=edges)
        peak = max(1, int((kept_h + rej_h).max()))
        x0, x1, y0, y1 = margin, pw - margin, top + ph - margin, top + margin
        bw = (x1 - x0) / bins
        for b in range(bins):
            hk = (y0 - y1) * kept_h[b] / peak
            hr = (y0 - y1) * rej_h[b] / peak
            bx = x0 + b * bw
            if kept_h[b]:
                draw.rectangle([bx, y0 - hk, bx + bw - 1, y0], fill=KEPT_RGB)
            if rej_h[b]:
                draw.rectangle([bx, y0 - hk - hr, bx + bw - 1, y0 - hk], fill=REJECTED_RGB)
        draw.line([x0, y0, x1, y0], fill="black")
        for bound in marks:
            bx = x0 + (bound - lo) / (hi - lo) * (x1 - x0)
            draw.line([bx, y1, bx, y0], fill=BOUND_RGB, width=2)
        draw.text((x0, top + 4), f"{key}  (n={len(vals)}, max bin {peak})", fill="black")
        draw.text((x0, y0 + 4), f"{lo:.4g}", fill="black")
        draw.text((x1 - 40, y0 + 4), f"{hi:.4g}", fill="black")
    return np.asarray(img)


def draw_contact_sheet(
    root: Path, rows: list[PairRecord], limit: int = 48, columns: int = 6, tile: int = 96
) -> np.ndarray:
    """Rejected pairs (original | edited) with seed and reason under each."""
    rows = rows[:limit]
    columns = max(1, min(columns, len(rows)))
    cap = 26
    cw, ch = 2 * tile + 8, tile + cap + 8
    nrows = (len(rows) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cw, nrows * ch), "white")
    draw = ImageDraw.Draw(sheet)
    for i, r in enumerate(rows):
        x, y = (i % columns) * cw + 4, (i // columns) * ch + 4
        for j, rel in enumerate((r.a, r.b)):
            im = Image.fromarray(load_image(root / rel))
            im = im.resize((tile, tile), Image.NEAREST if im.width < tile else Image.BILINEAR)
            sheet.paste(im, (x + j * tile, y))
        draw.text((x, y + tile + 2), f"{r.seed}", fill="black")
        draw.text((x, y + tile + 13), (r.reason or "")[:34], fill=REJECTED_RGB)
    return np.asarray(sheet)


def write_report(
    root: Path, rows: list[PairRecord], spec: list[dict[str, Any]], rules: dict[str, KeepRule]
) -> dict[str, Any]:
    """Write filter_report.json/.md, the histogram PNG and (when something was rejected) the contact sheet."""
    rejected = [r for r in rows if r.keep is False]
    report: dict[str, Any] = {
        "dataset": str(root),
        "total": len(rows),
        "kept": len(rows) - len(rejected),
        "rejected": len(rejected),
        "rejection_rate": len(rejected) / len(rows) if rows else 0.0,
        "reasons": reason_counts(rows),
        "scorers": spec,
        "keep_rules": {k: [r.low, r.high] for k, r in rules.items()},
        "scores": score_summary(rows),
        "strengths": strength_summary(rows),
        "edits": edit_summary(rows),
        "histogram": HISTOGRAM,
        "contact_sheet": CONTACT_SHEET if rejected else None,
    }
    report["warning"] = rejection_warning(report)
    if any(r.scores for r in rows):
        save_image(root / HISTOGRAM, draw_histograms(rows, rules))
    else:
        report["histogram"] = None
    sheet = root / CONTACT_SHEET
    if rejected:
        save_image(sheet, draw_contact_sheet(root, rejected))
    elif sheet.exists():
        sheet.unlink()  # a sheet from an earlier filter run would contradict this report
    atomic_write_json(root / f"{REPORT}.json", report)
    atomic_write_text(root / f"{REPORT}.md", render_markdown(report))
    return report


# Above this share of rejected pairs a keep range is more likely on the wrong scale than right.
MOST_REJECTED = 0.9


def rejection_warning(report: dict[str, Any]) -> str | None:
    """When keep ranges reject more than MOST_REJECTED of the pairs: the ranges beside the scores' own range
    (a range in years against a 0-1 scorer rejects everything, silently otherwise)."""
    given = {
        k for entry in report["scorers"] for k in (entry.get("keep") or {})
    }  # --keep, not built-in rules
    ranged = {k: v for k, v in report["keep_rules"].items() if k in given}
    if report["rejection_rate"] <= MOST_REJECTED or not ranged:
        return None
    keeps = ", ".join(f"{k}={_bound(lo)}:{_bound(hi)}" for k, (lo, hi) in ranged.items())
    seen = ", ".join(
        f"{name} {s['min']:.4g} to {s['max']:.4g}"
        for name, s in report["scores"].items()
        if name.split(".", 1)[-1] in ranged
    )
    return (
        f"the keep ranges {keeps} reject {100 * report['rejection_rate']:.0f}% of the pairs; the scores range "
        f"{seen}: is --keep on the scorer's scale (its output index and --activation)?"
    )


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Filter report: {report['dataset']}",
        "",
        f"- pairs: {report['total']}",
        f"- kept: {report['kept']}",
        f"- rejected: {report['rejected']} ({100 * report['rejection_rate']:.1f}%)",
        *([f"- **warning**: {report['warning']}"] if report.get("warning") else []),
        "",
        "## Reasons",
        "",
        "| reason | pairs |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in report["reasons"].items()],
        "",
        "## Scores",
        "",
        "| score | min | p05 | median | mean | p95 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[
            f"| {k} | {s['min']:.4g} | {s['p05']:.4g} | {s['median']:.4g} | {s['mean']:.4g} | {s['p95']:.4g} | {s['max']:.4g} |"
            for k, s in report["scores"].items()
        ],
        "",
        "## Scorers",
        "",
        *[f"- `{json.dumps(s)}`" for s in report["scorers"]],
        "",
    ]
    if report.get("strengths"):
        lines += [
            "## By edit strength (pairs made with --alpha-range; relative units, 1.0 = the dataset's alpha)",
            "",
            "| strength | pairs | rejected | rate |",
            "|---|---:|---:|---:|",
            *[
                f"| {b['low']:+.2f} to {b['high']:+.2f} | {b['pairs']} | {b['rejected']} | "
                f"{100 * b['rejection_rate']:.1f}% |"
                for b in report["strengths"]
            ],
            "",
        ]
    if report.get("edits"):
        lines += [
            "## By active edit (a pair with several edits counts under each)",
            "",
            "| edit | pairs | rejected | rate |",
            "|---|---:|---:|---:|",
            *[
                f"| {e['edit'] or '(none: identity pairs)'} | {e['pairs']} | {e['rejected']} | "
                f"{100 * e['rejection_rate']:.1f}% |"
                for e in report["edits"]
            ],
            "",
        ]
    if report["histogram"]:
        lines += [f"![score histograms]({report['histogram']})", ""]
    if report["contact_sheet"]:
        lines += [f"![rejected pairs]({report['contact_sheet']})", ""]
    return "\n".join(lines)
