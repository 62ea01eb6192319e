"""deploy/prometheus/rules.yaml: valid for promtool, its alerts fire as unit-tested, and it reads only series the
service exports; docker/prometheus.yml loads it as docker/compose.yaml mounts it."""

from __future__ import annotations

import shutil

import yaml

from tests.deploy_helpers import (
    PROMETHEUS_OWN,
    ROOT,
    RULES,
    exported_names,
    metric_names,
    promtool,
    recorded_names,
)


def test_promtool_checks_the_rules():
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_the_alerts_fire_as_the_unit_tests_expect():
    r = promtool("test", "rules", "rules.test.yaml", cwd=RULES.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_rules_cover_latency_errors_saturation_and_readiness():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert {
        "DistillTransformLatencyHigh",
        "DistillHigh5xxRate",
        "DistillQueueSaturated",
        "DistillNotReady",
    } <= alerts
    tested = (RULES.parent / "rules.test.yaml").read_text()
    assert all(f"alertname: {alert}" in tested for alert in alerts - {"DistillLegacyLatencyHigh"})


def test_the_rules_read_only_exported_series():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    known = exported_names() | recorded_names() | PROMETHEUS_OWN
    for group in groups:
        for rule in group["rules"]:
            names = metric_names(rule["expr"])
            assert names, rule
            assert names <= known, (rule.get("record") or rule.get("alert"), sorted(names - known))


def test_the_compose_prometheus_config_loads_the_rules(tmp_path):
    """As in the container: prometheus.yml in /etc/prometheus with rules.yaml mounted beside it."""
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    mounts = dict(
        v.rsplit(":", 2)[:2] for v in compose["services"]["prometheus"]["volumes"] if v.startswith(".")
    )
    assert mounts == {
        "./prometheus.yml": "/etc/prometheus/prometheus.yml",
        "../deploy/prometheus/rules.yaml": "/etc/prometheus/rules.yaml",
    }
    shutil.copy(ROOT / "docker" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "rules.yaml")
    r = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "16 rules found" in r.stdout
