"""deploy/grafana/distill-dashboard.json: the panels an operator needs (request and stage
latency quantiles, batch size, queue, rejections, inputs outside the training domain, readiness, CPU and memory), every query reads only series the
service exports (or rules.yaml records), and every query parses (promtool)."""

from __future__ import annotations

import json

import yaml

from tests.deploy_helpers import (
    PROMETHEUS_OWN,
    ROOT,
    dashboard,
    exported_names,
    metric_names,
    panels,
    promtool,
    queries,
    recorded_names,
    substituted,
)


# Grafana's variables, as a query would see them once Grafana substitutes them.
def test_the_extractor_finds_metric_names_and_nothing_else():
    expr = (
        "histogram_quantile(0.95, sum by (route, le) (rate(distill_request_duration_seconds_bucket"
        '{job=~"$job", status=~"2.."}[$__rate_interval]))) / on (job) group_left sum(up) > 0 and bool x:y:z'
    )
    assert metric_names(expr) == {"distill_request_duration_seconds_bucket", "up", "x:y:z"}


def test_the_dashboard_shows_latency_queue_readiness_and_resources():
    text = json.dumps([p["targets"] for p in panels()])
    for needed in (
        "distill_request_duration_seconds_count",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "distill_stage_duration_seconds_bucket",
        "distill_batch_size",
        "distill_queue_depth",
        "distill_requests_rejected_total",
        "distill_domain_verdicts_total",
        "distill_requests_in_flight",
        "distill_ready",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert needed in text, needed
    by_title = {p["title"]: json.dumps(p["targets"]) for p in panels()}
    assert "sum by (route, le)" in by_title["Latency p50 / p95 / p99 per endpoint (2xx)"]
    assert "sum by (stage, le)" in by_title["Stage latency p50 / p95 / p99"]


def test_every_query_reads_only_exported_series():
    known = exported_names() | recorded_names() | PROMETHEUS_OWN
    used = set()
    for where, expr in queries():
        names = metric_names(expr)
        assert names, (where, expr)
        assert names <= known, (where, sorted(names - known))
        used |= names
    assert len(used) >= 12


def test_the_panels_are_well_formed():
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, f"panel {p['title']!r} overlaps another"
        cells |= area
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} and p["targets"], p["title"]
    assert {v["name"] for v in board["templating"]["list"]} == {"datasource", "job", "route"}


def test_every_query_parses(tmp_path):
    """promtool parses each query as a recording rule's expression."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": substituted(expr)} for i, (_, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_provisions_the_dashboard_and_its_data_source():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 2)[:2] for v in grafana["volumes"] if v.startswith("."))
    assert (
        mounts["../deploy/grafana/distill-dashboard.json"] == "/etc/grafana/dashboards/distill-dashboard.json"
    )
    provisioning = ROOT / "docker" / "../deploy/grafana/provisioning"
    assert mounts["../deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "distill.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert (
        compose["services"]["prometheus"]["ports"] == ["${BIND_ADDRESS:-127.0.0.1}:9090:9090"]
        and "prometheus" in grafana["depends_on"]
    )
