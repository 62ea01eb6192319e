"""`distill models list|show|verify|schema`: inspect the model zoo from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from core.atomic import atomic_write_text
from model_zoo.registry import ModelEntry, get_entry, list_entries, zoo_roots
from model_zoo.schema import json_schema_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list, show and verify model-zoo entries")
    add_zoo_argument(parser, "--root")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="one line per entry: name, edit, size, variants, stride, zoo")
    show = actions.add_parser("show", help="an entry's manifest, readable (or raw with --json)")
    show.add_argument("name")
    show.add_argument(
        "--json", action="store_true", help="print the manifest as JSON (in the current schema version)"
    )
    verify = actions.add_parser("verify", help="check the size and sha256 of every file of an entry")
    verify.add_argument("name")
    for action in (listing, show, verify):  # before or after the action alike
        add_zoo_argument(action, default=argparse.SUPPRESS)
    schema = actions.add_parser("schema", help="print the JSON Schema of an entry's manifest.json")
    schema.add_argument(
        "--out", type=Path, help="write it to this file instead (e.g. docs/model_zoo_entry.schema.json)"
    )
    parser.set_defaults(func=run)


def add_zoo_argument(
    parser: argparse.ArgumentParser, *aliases: str, default: Any = None, type: Any = Path
) -> None:
    """``--model-zoo DIR``, one spelling on every command that looks an entry up by name (``aliases``: older
    spellings that still work)."""
    parser.add_argument(
        "--model-zoo",
        *aliases,
        dest="model_zoo",
        type=type,
        default=default,
        metavar="DIR",
        help="model-zoo folder for entry names (default: $DISTILL_MODEL_ZOO, else ./model_zoo of the current "
        "folder, then the shipped zoo)",
    )


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "show": _show, "verify": _verify, "schema": _schema}[args.action](args)


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _edit_text(manifest: dict[str, Any]) -> str:
    edit = manifest.get("edit") or {}
    if edit.get("attribute") is None and edit.get("alpha") is None:
        return "-"
    text = str(edit.get("attribute") or "?")
    if edit.get("alpha") is not None:
        text += f" {float(edit['alpha']):+g}"
    if edit.get("layers"):
        text += f" w[{edit['layers'][0]}:{edit['layers'][1]}]"
    return text


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _list(args: argparse.Namespace) -> int:
    entries = list_entries(args.model_zoo)
    if not entries:
        root = zoo_roots(args.model_zoo)[0]
        print(f"no models in {root} (create one with `distill export RUN --out {root}/NAME`)")
        return 0
    rows = [["NAME", "EDIT", "INPUT", "SIZE", "VARIANTS", "STRIDE", "ZOO"]]
    for e in entries:
        size = sum(r["bytes"] for r in e.manifest["files"].values())
        h, w = e.input_size
        rows.append(
            [
                e.name,
                _edit_text(e.manifest),
                f"{h}x{w}",
                _human_bytes(size),
                ",".join(e.variants),
                str(e.stride),
                str(e.zoo),
            ]
        )
    print(_table(rows))
    return 0


def _variant_line(name: str, record: dict[str, Any]) -> str:
    parts = [f"{name}: {record['file']}", f"providers {','.join(record.get('providers', [])) or '-'}"]
    if record.get("psnr_vs_fp32_db") is not None:
        parts.append(f"PSNR vs fp32 {record['psnr_vs_fp32_db']:.2f} dB")
    if record.get("max_abs_diff_vs_fp32") is not None:
        parts.append(f"max|diff| vs fp32 {record['max_abs_diff_vs_fp32']:.2e}")
    if record.get("median_ms") is not None:
        parts.append(f"{record['median_ms']:.1f} ms median on {record.get('measured_on', '?')}")
    return "  " + ", ".join(parts)


def _show(args: argparse.Namespace) -> int:
    entry: ModelEntry = get_entry(args.name, args.model_zoo, verify=False)
    m = entry.manifest
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    h, w = entry.input_size
    inp = m["input"]
    lines = [
        f"{entry.name}  ({entry.path}, from the zoo {entry.zoo})",
        f"description: {m.get('description') or '-'}",
        f"edit: {_edit_text(m)}",
        f"input: {inp.get('name', 'input')} {inp.get('layout', 'NCHW')} {inp.get('dtype', 'float32')} "
        f"{inp.get('channels', 3)}x{h}x{w}, range {inp.get('range', [-1, 1])}, H and W multiples of {entry.stride}",
        "variants:",
        *(_variant_line(k, v) for k, v in m["variants"].items()),
        f"teacher: {m['teacher']['file'] if m.get('teacher') else '- (the legacy endpoint is unavailable)'}",
        f"direction: {m['direction']['file'] if m.get('direction') else '-'}",
    ]
    for t in entry.spec.engines or []:
        psnr = "" if t.psnr_vs_fp32_db is None else f", PSNR vs fp32 {t.psnr_vs_fp32_db:.2f} dB"
        lines.append(
            f"engine {t.engine} ({t.variant}, {t.precision}): {t.median_ms:.1f} ms median at "
            f"{t.timed_size[0]}x{t.timed_size[1]} on {t.measured_on}{psnr}"
        )
    if m.get("data"):
        lines.append(
            "data: " + ", ".join(f"{k} {v}" for k, v in m["data"].items() if not isinstance(v, dict | list))
        )
    if m.get("training"):
        lines.append(
            "training: "
            + ", ".join(f"{k} {v}" for k, v in m["training"].items() if not isinstance(v, dict | list))
        )
    heldout = (m.get("training") or {}).get("heldout") or {}
    if "val_psnr" in heldout:
        lines.append(
            f"held-out (student vs teacher): PSNR {heldout['val_psnr']:.2f} dB"
            + (f", SSIM {heldout['val_ssim']:.3f}" if "val_ssim" in heldout else "")
            + (f" on {heldout['n_val']} pairs" if "n_val" in heldout else "")
            + (f" at epoch {heldout['epoch']}" if "epoch" in heldout else "")
        )
    if m.get("export"):
        lines.append(
            "export: "
            + ", ".join(f"{k} {v}" for k, v in m["export"].items() if not isinstance(v, dict | list))
        )
    lines.append("files:")
    lines += [
        f"  {f}  {_human_bytes(r['bytes'])}  sha256 {r['sha256'][:16]}..." for f, r in m["files"].items()
    ]
    print("\n".join(lines))
    return 0


# Folders of reports an entry may hold beside its files (`distill evaluate ENTRY --out ENTRY/evaluation`).
REPORT_FOLDERS = ("evaluation",)


def _verify(args: argparse.Namespace) -> int:
    entry = get_entry(args.name, args.model_zoo, verify=True)
    for fname, record in entry.manifest["files"].items():
        print(f"ok  {fname}  {record['bytes']} bytes  sha256 {record['sha256']}")
    reports: dict[str, int] = {}
    for path in entry.unlisted():
        rel = path.relative_to(entry.path)
        if len(rel.parts) > 1 and rel.parts[0] in REPORT_FOLDERS:
            reports[rel.parts[0]] = reports.get(rel.parts[0], 0) + 1
            continue
        print(f"not in the manifest (never loaded or served): {rel}")
    for folder, n in reports.items():
        print(f"reports  {folder}/  {n} files (not part of the entry: never loaded or served)")
    print(f"{entry.name} (zoo {entry.zoo}): all {len(entry.manifest['files'])} files match the manifest")
    return 0


def _schema(args: argparse.Namespace) -> int:
    if args.out is None:
        print(json_schema_text(), end="")
    else:
        atomic_write_text(args.out, json_schema_text())
        print(f"wrote {args.out}")
    return 0
