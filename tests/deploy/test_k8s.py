"""deploy/k8s: every manifest validated offline against the Kubernetes JSON schemas (kubernetes-validate ships
them), the two CRDs (ServiceMonitor, PyTorchJob) against schemas of the fields used here, the wiring
between the objects (probes, autoscaling, disruption budgets, scraping, the commands the Jobs run), and every
pod's hardening: Pod Security "restricted", no service-account token, a NetworkPolicy."""

from __future__ import annotations

import argparse
import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from distill import cli

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is missing (pip install -e '.[dev]' installs it)"
)
jsonschema = pytest.importorskip("jsonschema")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
README = K8S.parents[1] / "README.md"
REGISTRY = ""  # the registry prefix of every image name, as the README's cluster steps set it (fixture below)
# The oldest version the manifests need (Indexed Jobs' backoffLimitPerIndex and podFailurePolicy FailIndex
# are on by default from 1.29) and the newest whose schemas kubernetes-validate ships.
VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version() + ".0")
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("kubeflow.org/v1", "PyTorchJob")}

LABEL_SELECTOR = {
    "type": "object",
    "required": ["matchLabels"],
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1}
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
}
# The fields of prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1) that servicemonitor.yaml uses.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "jobLabel": {"type": "string"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}
REPLICA_SPEC = {
    "type": "object",
    "required": ["replicas", "template"],
    "additionalProperties": False,
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
        "template": {"type": "object"},
    },
}
# The fields of Kubeflow training-operator's PyTorchJob (kubeflow.org/v1) that train-pytorchjob.yaml uses; the
# pod templates are validated as core PodTemplateSpecs.
PYTORCH_JOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"},
        "kind": {"const": "PyTorchJob"},
        "metadata": METADATA,
        "spec": {
            "type": "object",
            "required": ["pytorchReplicaSpecs"],
            "additionalProperties": False,
            "properties": {
                "nprocPerNode": {"type": "string", "pattern": "^([0-9]+|auto|cpu|gpu)$"},
                "runPolicy": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "backoffLimit": {"type": "integer", "minimum": 0},
                        "cleanPodPolicy": {"enum": ["None", "Running", "All"]},
                    },
                },
                "pytorchReplicaSpecs": {
                    "type": "object",
                    "required": ["Master"],
                    "additionalProperties": False,
                    "properties": {"Master": REPLICA_SPEC, "Worker": REPLICA_SPEC},
                },
            },
        },
    },
}


def readme_registry() -> str:
    """The prefix the README's cluster steps put before every image (``image: registry.example.com/.../``)."""
    match = re.search(r"image: (\S+/)stylegan2-distill:", README.read_text())
    assert match, "the README shows the registry edit of the manifests' image: lines"
    return match.group(1)


@pytest.fixture(autouse=True, params=["as shipped", "with the README's registry"])
def registry(request, monkeypatch):
    """Every test runs on the manifests as shipped and as the README tells a cluster user to edit them."""
    monkeypatch.setattr(f"{__name__}.REGISTRY", readme_registry() if request.param != "as shipped" else "")


def load(name: str) -> list[dict]:
    text = (
        (K8S / name).read_text().replace("image: stylegan2-distill:", f"image: {REGISTRY}stylegan2-distill:")
    )
    return [doc for doc in yaml.safe_load_all(text) if doc]


def objects() -> list[tuple[str, dict]]:
    return [(path.name, doc) for path in sorted(K8S.glob("*.yaml")) for doc in load(path.name)]


def find(kind: str, name: str) -> dict:
    matches = [doc for _, doc in objects() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def validate_pod_template(template: dict, version: str) -> None:
    """A pod template as the core schema sees it (inside a v1 PodTemplate)."""
    wrapper = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(wrapper, version, strict=True)


def distill_args(argv: list[str]) -> argparse.Namespace:
    """Parse a `distill ...` (or `python -m distill ...`) argument list with the real CLI's parser."""
    return cli.build_parser().parse_args(argv)


def test_the_manifests_hold_the_service_its_scaling_and_the_pipeline_jobs():
    kinds = sorted({doc["kind"] for _, doc in objects()})
    assert kinds == [
        "Deployment",
        "HorizontalPodAutoscaler",
        "Job",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "PyTorchJob",
        "Service",
        "ServiceMonitor",
    ]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_core_manifest_matches_the_kubernetes_schema(version):
    checked = 0
    for name, doc in objects():
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(
                f"{name}: {doc['kind']} {doc['metadata']['name']}: {e.caught.message} at "
                f"{'.'.join(map(str, e.caught.absolute_path))} (Kubernetes {version})"
            )
        checked += 1
    assert checked == 16


def test_the_validator_catches_a_mistake():
    """Strict schemas refuse an unknown field (a typo would otherwise be dropped silently by the API server)."""
    deployment = load("serve-cpu.yaml")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProb"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_custom_resources_match_their_fields_and_pod_templates(version):
    monitor = find("ServiceMonitor", "stylegan2-distill")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    job = find("PyTorchJob", "distill-train")
    jsonschema.validate(job, PYTORCH_JOB)
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        validate_pod_template(spec["template"], version)
        assert [c["name"] for c in spec["template"]["spec"]["containers"]] == ["pytorch"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**monitor, "spec": {**monitor["spec"], "endpoint": []}}, SERVICE_MONITOR)


@pytest.mark.parametrize("name", ["distill-cpu", "distill-gpu"])
def test_each_deployment_is_probed_scaled_budgeted_served_and_scraped(name):
    deployment = find("Deployment", name)
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    (container,) = pod["spec"]["containers"]
    port = container["ports"][0]
    assert (port["name"], port["containerPort"]) == ("http", 8000)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and resources["limits"]["cpu"] == resources[
        "requests"
    ]["cpu"]
    assert ("nvidia.com/gpu" in resources["limits"]) == name.endswith("gpu")
    assert container["image"] == f"{REGISTRY}stylegan2-distill:{name.split('-')[1]}"
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the image's user
    assert {"name": "tmp", "mountPath": "/tmp"} in container[
        "volumeMounts"
    ]  # read-only root, metrics dir in /tmp

    hpa = find("HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "cpu" in resources["requests"]  # Utilization targets are a share of the request
    pdb = find("PodDisruptionBudget", name)
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a drain can always evict one pod

    service = find("Service", name)
    assert selects(service["spec"]["selector"], labels)
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = find("ServiceMonitor", "stylegan2-distill")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert name.startswith("distill")  # the job label rules.yaml's `up{job=~"distill.*"}` matches


def test_pairs_run_as_an_indexed_job_with_one_shard_a_pod():
    job = find("Job", "distill-pairs")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] > 1
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["DISTILL_NUM_SHARDS"]) == spec["completions"]
    command = container["command"]
    assert command[:2] == ["distill", "pairs"]
    args = distill_args(command[1:])
    assert (
        args.shard is None and args.num_shards is None
    )  # both from the Job: JOB_COMPLETION_INDEX, DISTILL_NUM_SHARDS
    assert args.out.startswith("/data/") and args.generator.startswith("/data/")
    volume = spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    claim = find("PersistentVolumeClaim", volume)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    exit_codes = spec["podFailurePolicy"]["rules"][0]
    assert exit_codes["action"] == "FailIndex" and exit_codes["onExitCodes"]["values"] == [
        2
    ]  # bad input: no retry


def test_photos_are_edited_as_an_indexed_job_with_one_shard_a_pod():
    job = find("Job", "distill-transform")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] > 1
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["DISTILL_NUM_SHARDS"]) == spec["completions"]
    assert container["image"] == f"{REGISTRY}stylegan2-distill:cpu"  # the serving image runs it
    command = container["command"]
    assert command[:2] == ["distill", "transform"]
    args = distill_args(command[1:])
    assert args.shard is None and args.num_shards is None  # both from the Job
    assert str(args.out).startswith("/data/") and all(str(p).startswith("/data/") for p in args.inputs)
    assert (Path(__file__).resolve().parents[2] / "model_zoo" / args.model / "manifest.json").is_file()
    volume = spec["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
    assert find("PersistentVolumeClaim", volume)["spec"]["accessModes"] == ["ReadWriteMany"]
    exit_codes = spec["podFailurePolicy"]["rules"][0]
    assert exit_codes["action"] == "FailIndex" and exit_codes["onExitCodes"]["values"] == [2]
    (policy,) = policies_for(spec["template"]["metadata"]["labels"])
    assert policy["ingress"] == [] and policy["egress"] == []  # no traffic either way


def test_training_runs_as_a_multi_node_torchrun_job():
    job = find("Job", "distill-train")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] > 1
    (container,) = pod["containers"]
    assert container["command"] == ["sh", "-c"]
    argv = shlex.split(container["args"][0])
    assert argv[:2] == ["exec", "torchrun"]
    module = argv.index("-m")
    launcher = dict(a.lstrip("-").split("=", 1) for a in argv[2:module])
    assert int(launcher["nnodes"]) == spec["completions"]
    assert int(launcher["nproc_per_node"]) == int(container["resources"]["limits"]["nvidia.com/gpu"])
    assert launcher["node_rank"] == "$JOB_COMPLETION_INDEX"
    service = find("Service", pod["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    assert selects(service["spec"]["selector"], {"batch.kubernetes.io/job-name": job["metadata"]["name"]})
    assert launcher["master_addr"] == f"{job['metadata']['name']}-0.{pod['subdomain']}"
    assert int(launcher["master_port"]) == service["spec"]["ports"][0]["port"]
    assert argv[module + 1] == "distill"
    args = distill_args(argv[module + 2 :])
    assert args.command == "train" and args.resume and not args.progress


def test_the_pytorchjob_runs_the_same_training():
    job = find("PyTorchJob", "distill-train")
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert int(job["spec"]["nprocPerNode"]) == int(master["resources"]["limits"]["nvidia.com/gpu"])
    command = master["command"]
    assert command[:3] == ["torchrun", "-m", "distill"]
    args = distill_args(command[3:])
    assert args.command == "train" and args.resume
    indexed = shlex.split(
        find("Job", "distill-train")["spec"]["template"]["spec"]["containers"][0]["args"][0]
    )
    assert command[3:] == indexed[indexed.index("distill") + 1 :]


def pod_templates() -> list[tuple[str, dict]]:
    """(where, pod template) of every workload: Deployments, Jobs and the PyTorchJob's replicas."""
    out = []
    for name, doc in objects():
        if doc["kind"] in ("Deployment", "Job"):
            out.append((f"{name}: {doc['metadata']['name']}", doc["spec"]["template"]))
        elif doc["kind"] == "PyTorchJob":
            for replica, spec in doc["spec"]["pytorchReplicaSpecs"].items():
                out.append((f"{name}: {replica}", spec["template"]))
    return out


# Pod Security Standards, "restricted" profile (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
# the volume types it allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict) -> list[str]:
    """What keeps a pod spec out of the Pod Security "restricted" profile (empty when it passes), checked as
    the admission controller does: pod-level settings count for every container unless a container overrides."""
    spec, problems = pod["spec"], []
    pod_ctx = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(field)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)}")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        ctx = c.get("securityContext", {})

        def setting(key: str, ctx: dict = ctx) -> object:
            return ctx.get(key, pod_ctx.get(key))

        if ctx.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if ctx.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        caps = ctx.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{c['name']}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{c['name']}: adds capabilities {caps['add']}")
        if setting("runAsNonRoot") is not True:
            problems.append(f"{c['name']}: runAsNonRoot must be true")
        if setting("runAsUser") == 0:
            problems.append(f"{c['name']}: runAsUser 0")
        if (setting("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{c['name']}: seccompProfile RuntimeDefault or Localhost")
        if any("hostPort" in p for p in c.get("ports", [])):
            problems.append(f"{c['name']}: hostPort")
    return problems


def test_the_restricted_check_catches_a_mistake():
    pod = copy.deepcopy(find("Job", "distill-pairs")["spec"]["template"])
    assert restricted_violations(pod) == []
    del pod["spec"]["containers"][0]["securityContext"]
    assert len(restricted_violations(pod)) == 2


@pytest.mark.parametrize("where,pod", pod_templates(), ids=[w for w, _ in pod_templates()])
def test_every_pod_is_pod_security_restricted_without_a_service_account_token(where, pod):
    assert restricted_violations(pod) == [], where
    assert pod["spec"]["automountServiceAccountToken"] is False, (
        where
    )  # none of them calls the Kubernetes API
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001  # the images' numeric user


def selector_matches(selector: dict, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and In / NotIn / Exists / DoesNotExist expressions) against labels."""
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        ok = {
            "In": value in e.get("values", []),
            "NotIn": value not in e.get("values", []),
            "Exists": value is not None,
            "DoesNotExist": value is None,
        }[e["operator"]]
        if not ok:
            return False
    return selects(selector.get("matchLabels", {}), labels)


def policies_for(labels: dict[str, str]) -> list[dict]:
    return [
        doc["spec"]
        for _, doc in objects()
        if doc["kind"] == "NetworkPolicy" and selector_matches(doc["spec"]["podSelector"], labels)
    ]


@pytest.mark.parametrize("where,pod", pod_templates(), ids=[w for w, _ in pod_templates()])
def test_every_pod_is_under_a_network_policy_both_ways(where, pod):
    (policy,) = policies_for(pod["metadata"]["labels"])
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"], where


def test_serving_pods_take_only_their_http_port_and_call_nothing():
    pod = find("Deployment", "distill-cpu")["spec"]["template"]
    (policy,) = policies_for(pod["metadata"]["labels"])
    (rule,) = policy["ingress"]
    assert "from" not in rule and rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["egress"] == []


def test_training_pods_reach_each_other_and_dns_only():
    pod = find("Job", "distill-train")["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (policy,) = policies_for(labels)
    assert all(
        selector_matches(peer["podSelector"], labels) for rule in policy["ingress"] for peer in rule["from"]
    )
    peers, dns = policy["egress"]
    assert selector_matches(peers["to"][0]["podSelector"], labels)
    assert {p["port"] for p in dns["ports"]} == {53}
    assert selector_matches(dns["to"][0]["podSelector"], {"k8s-app": "kube-dns"})
