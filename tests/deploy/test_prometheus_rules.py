"""deploy/prometheus/rules.yaml: valid for promtool, its alerts fire as unit-tested, and it reads only series the
service exports, with the labels they keep once the Prometheus Operator has scraped them; docker/prometheus.yml
loads it as docker/compose.yaml mounts it."""

from __future__ import annotations

import re
import shutil

import yaml

from tests.deploy_helpers import (
    PROMETHEUS_OWN,
    ROOT,
    RULES,
    exported_names,
    exported_samples,
    metric_names,
    promtool,
    queries,
    recorded_names,
    substituted,
)

K8S = ROOT / "deploy" / "k8s"
# Series Prometheus itself gives labels to, not the service (up{job=...}); histogram buckets' own label.
NOT_SCRAPED = {"job", "le"}


def operator_target_labels() -> dict[str, str]:
    """The labels the Prometheus Operator's generated scrape config gives every target of servicemonitor.yaml on
    the serve-cpu.yaml Service: job (the Service's name, or its jobLabel label), endpoint (the port's name),
    namespace, service, pod, container and instance."""
    monitor = yaml.safe_load((K8S / "servicemonitor.yaml").read_text())
    service = next(
        d for d in yaml.safe_load_all((K8S / "serve-cpu.yaml").read_text()) if d["kind"] == "Service"
    )
    name = service["metadata"]["name"]
    job_label = monitor["spec"].get("jobLabel")
    return {
        "job": service["metadata"]["labels"][job_label] if job_label else name,
        "endpoint": monitor["spec"]["endpoints"][0]["port"],
        "namespace": "default",
        "service": name,
        "pod": f"{name}-5d9c7b8f6-x2x7q",
        "container": "distill",
        "instance": "10.1.2.3:8000",
    }


def relabelled(labels: dict[str, str], target: dict[str, str]) -> dict[str, str]:
    """A scraped sample's labels as stored with ``honor_labels: false`` (the operator's default): a label the
    target also sets is renamed ``exported_<name>`` and the target's value wins."""
    out = {f"exported_{k}" if k in target else k: v for k, v in labels.items()}
    return {**out, **target}


def stored_series() -> list[dict[str, str]]:
    """The labels of every sample the service exports, as the operator's Prometheus stores them."""
    target = operator_target_labels()
    return [relabelled(labels, target) for _, labels in exported_samples()]


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


def test_the_operators_relabelling_renames_no_service_label():
    renamed = sorted({k for labels in stored_series() for k in labels if k.startswith("exported_")})
    assert not renamed, f"the Prometheus Operator's target labels overwrite the service's {renamed}"


def test_every_label_matcher_of_the_rules_and_dashboard_selects_a_scraped_series():
    """route="/transform" in an alert, route=~"$route" in a panel: each label a rule or a panel matches on keeps
    the service's values once scraped through the ServiceMonitor (a collision would leave only "http")."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    exprs = [rule["expr"] for group in groups for rule in group["rules"]]
    exprs += [substituted(expr) for _, expr in queries()]
    series = stored_series()
    matchers = {
        (label, value)
        for expr in exprs
        for label, value in re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', expr)
        if label not in NOT_SCRAPED
        and label != "status"  # no 5xx answered yet: statuses are checked elsewhere
    }
    assert ("route", "/transform") in matchers
    for label, value in sorted(matchers):
        assert any(re.fullmatch(value, labels.get(label, "")) for labels in series), (label, value)
