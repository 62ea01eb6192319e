"""docker/compose.yaml: its defaults (published on 127.0.0.1, no default Grafana password), podman-compose reads
the file, and Prometheus (Debian's, the same
configuration and rules as the compose service) scrapes a running `distill serve`, evaluates the rules and
answers every dashboard query with data."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import httpx
import pytest
import yaml

from tests.app_helpers import add_domain, free_port, make_entry, png_bytes, serve
from tests.deploy_helpers import ROOT, RULES, queries, substituted

COMPOSE = ROOT / "docker" / "compose.yaml"


def interpolated(env: dict[str, str]) -> dict:
    """compose.yaml as Compose reads it with ``env``: ${VAR}, ${VAR:-default}, and ${VAR:?error} (an unset or
    empty VAR stops Compose with the error: raised as ValueError)."""

    def value(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise ValueError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    text = re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, COMPOSE.read_text())
    return yaml.safe_load(text)


def test_ports_are_published_on_localhost_unless_told_otherwise():
    published = {
        name: service.get("ports", [])
        for name, service in interpolated({"GRAFANA_ADMIN_PASSWORD": "x"})["services"].items()
    }
    assert published["prometheus"] and published["grafana"] and published["distill"]
    for name, ports in published.items():
        for port in ports:
            assert port.startswith("127.0.0.1:"), (name, port)
    everywhere = interpolated({"GRAFANA_ADMIN_PASSWORD": "x", "BIND_ADDRESS": "0.0.0.0"})
    assert everywhere["services"]["grafana"]["ports"] == ["0.0.0.0:3000:3000"]


def test_the_grafana_password_comes_from_the_environment():
    with pytest.raises(ValueError, match="GRAFANA_ADMIN_PASSWORD"):
        interpolated({})
    grafana = interpolated({"GRAFANA_ADMIN_PASSWORD": "s3cret-from-env"})["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret-from-env"


def test_podman_compose_reads_the_file():
    if shutil.which("podman-compose") is None or shutil.which("podman") is None:
        pytest.skip(
            "podman-compose or podman is missing (pip install podman-compose; apt-get install podman)"
        )
    r = subprocess.run(
        ["podman-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRAFANA_ADMIN_PASSWORD": "test"},
    )
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)
    assert {"distill", "prometheus", "grafana"} <= set(config["services"])
    for service in config["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), volume


def query(prometheus: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def wait_for(what: str, check, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def prometheus_and_service(tmp_path_factory):
    """`distill serve --workers 2` and a Prometheus on docker/prometheus.yml (target and intervals made local)."""
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is missing: apt-get install prometheus (.ci/run installs it)")
    root = tmp_path_factory.mktemp("monitoring")
    make_entry(root / "zoo", "tiny", teacher=False)
    add_domain(root / "zoo" / "tiny")  # the domain panel's series
    env = {"PROMETHEUS_MULTIPROC_DIR": str(root / "multiproc"), "DISTILL_LEGACY_WORKERS": "0"}
    with serve(root / "zoo", "--workers", "2", env=env) as (url, _):
        config = yaml.safe_load((ROOT / "docker" / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        (job,) = config["scrape_configs"]
        job["scrape_interval"] = "1s"
        job["static_configs"][0]["targets"] = [url.removeprefix("http://")]
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        shutil.copy(RULES, root / "rules.yaml")
        port = free_port()
        with open(root / "prometheus.log", "w") as log:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={root / 'prometheus.yml'}",
                    f"--storage.tsdb.path={root / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            yield f"http://127.0.0.1:{port}", url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_prometheus_scrapes_the_service_and_evaluates_the_rules(prometheus_and_service):
    prometheus, url = prometheus_and_service
    wait_for("Prometheus to answer", lambda: _answers(prometheus))
    wait_for("the first scrape", lambda: query(prometheus, 'up{job="distill"} == 1'))
    wait_for("the service ready", lambda: query(prometheus, "min(distill_ready) == 1"))
    deadline = time.monotonic() + 30
    while not query(prometheus, 'job_route_status:distill_requests:rate5m{route="/transform"} > 0'):
        assert time.monotonic() < deadline, "the recording rule never saw the requests"
        for body in (png_bytes(), png_bytes(), b"not an image"):
            httpx.post(f"{url}/transform", files={"image": ("x.png", body, "image/png")}, timeout=30)
        time.sleep(1)
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 16 and all(rule["health"] == "ok" for rule in rules), rules
    firing = {
        alert["labels"]["alertname"]
        for alert in httpx.get(f"{prometheus}/api/v1/alerts").json()["data"]["alerts"]
    }
    assert not firing & {"DistillNotReady", "DistillDown", "DistillHigh5xxRate"}, firing


def test_every_dashboard_query_answers_with_data(prometheus_and_service):
    prometheus, _ = prometheus_and_service
    wait_for(
        "the requests' stage histograms",
        lambda: query(prometheus, "job_route_stage:distill_stage_duration_seconds:p95_rate5m"),
    )
    # Empty unless a request was refused in the last minute (the panel hides the zero series with "> 0").
    may_be_empty = {"Rejections per endpoint and reason"}
    empty = [
        where
        for where, expr in queries()
        if where not in may_be_empty and not query(prometheus, substituted(expr))
    ]
    assert not empty, empty


def _answers(prometheus: str) -> bool:
    try:
        return httpx.get(f"{prometheus}/-/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
