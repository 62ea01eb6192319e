"""Shared by tests/deploy/: the metric names a PromQL expression reads, and promtool."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yaml"
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}
# Series Prometheus makes itself, not the service.
PROMETHEUS_OWN = {"up"}


def metric_names(expr: str) -> set[str]:
    """The metric (or recorded series) names an expression selects: every identifier that is not a function, a
    keyword, a label name in a grouping clause, or inside a string, a label matcher or a range."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\{[^}]*\}", "", s)
    s = re.sub(r"\[[^\]]*\]", "", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        word = match.group()
        if word.lower() in KEYWORDS or s[match.end() :].lstrip().startswith("("):
            continue
        names.add(word)
    return names


def recorded_names() -> set[str]:
    """The series deploy/prometheus/rules.yaml records."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run promtool (Debian's prometheus package), skipping the test where it is not installed."""
    if shutil.which("promtool") is None:
        pytest.skip("promtool is missing: apt-get install prometheus (.ci/run installs it)")
    return subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@functools.cache
def exported_names() -> frozenset[str]:
    """Every sample name the service's /metrics serves once it has answered a /transform request (an in-process
    app on a tiny model: all histograms, counters and gauges, and the process collector's metrics)."""
    return frozenset(name for name, _ in exported_samples())


@functools.cache
def exported_samples() -> tuple[tuple[str, dict[str, str]], ...]:
    """(name, labels) of every sample the service's /metrics serves once it has answered a /transform request
    (on a model with a recorded domain)."""
    from app.config import Settings
    from app.main import create_app
    from tests.app_helpers import add_domain, make_entry, png_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's notice about httpx vs httpx2
        from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory() as zoo:
        make_entry(Path(zoo), "tiny", teacher=False)
        add_domain(Path(zoo) / "tiny")  # a recorded domain: its verdict counter is exported
        settings = Settings(model_zoo=Path(zoo), default_model="tiny", warmup_runs=1, legacy_workers=0)
        with TestClient(create_app(settings)) as client:
            deadline = time.monotonic() + 60
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, client.get("/readyz").json()
                time.sleep(0.05)
            files = {"image": ("x.png", png_bytes(), "image/png")}
            assert client.post("/transform", files=files).status_code == 200
            text = client.get("/metrics").text
    return tuple(
        (s.name, dict(s.labels)) for family in text_string_to_metric_families(text) for s in family.samples
    )


# The Grafana dashboard's queries (test_deploy_dashboard, test_deploy_compose).
DASHBOARD = ROOT / "deploy" / "grafana" / "distill-dashboard.json"


VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$route": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every variable's query (label_values(SELECTOR, label) -> SELECTOR)."""
    out = [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", var["query"]["query"])
            assert selector, var
            out.append((f"variable {var['name']}", selector.group(1)))
    return out


def substituted(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr
