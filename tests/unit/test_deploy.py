"""deploy/: the Kubernetes manifests validate against the API schemas (kubernetes-validate,
offline) and say what the server needs (probes on /readyz and /healthz, a grace period
above the drain, the flows and secrets they name exist); the Dockerfile's final stage is
Python 3.13, non-root, checks /healthz and stops with SIGTERM; the Compose stack and its
env example agree with each other and with the settings the server knows.

The Dockerfile's command itself is run in tests/component/test_container_command.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from ivr.config import _ENV, Settings
from ivr.server.access import startup_refusal

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
K8S_VERSION = kubernetes_validate.latest_version()
KNOWN_SETTINGS = set(_ENV.values())


# -- helpers shared with the container-command test -------------------------------------


def dockerfile_stages(path: Path = DEPLOY / "Dockerfile") -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined,
    comments dropped; ARG defaults before the first FROM substituted into FROM."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction == "ARG" and not stages and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        if instruction == "FROM":
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
            stages.append([])
        if stages:
            stages[-1].append((instruction, rest))
    return stages


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The stage's ENV as a mapping (KEY=VALUE pairs, `$PATH` left as written)."""
    env: dict[str, str] = {}
    for instruction, rest in stage:
        if instruction == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            pairs[key] = value
    return pairs


def _one(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [rest for ins, rest in stage if ins == instruction]
    assert len(found) == 1, f"expected one {instruction} in the final stage, got {found}"
    return found[0]


# -- Kubernetes -------------------------------------------------------------------------


def _manifests() -> dict[str, dict[str, Any]]:
    """The kustomization's resource files by kind (one document each)."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    by_kind = {}
    for name in kustomization["resources"]:
        doc = yaml.safe_load((KUBE / name).read_text())
        by_kind[doc["kind"]] = doc
    return by_kind


def _validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_each_manifest_validates_against_the_api_schema() -> None:
    manifests = _manifests()
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
            "PodDisruptionBudget"} <= set(manifests)
    for doc in manifests.values():
        _validate(doc)


def test_the_validator_refuses_a_misspelled_field() -> None:
    """Strict validation is what makes the test above worth having: a typo fails it."""
    deployment = _manifests()["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 40
    with pytest.raises(ValidationError):
        _validate(deployment)


@pytest.mark.skipif(shutil.which("kubectl") is None,
                    reason="kubectl not installed: the rendered kustomization is not checked "
                           "(the manifests are still validated one by one)")
def test_the_rendered_kustomization_validates() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(KUBE)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ConfigMap", "ConfigMap", "Service", "Deployment",
                            "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget"])
    for doc in docs:
        _validate(doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    flows_map = next(d for d in docs if d["kind"] == "ConfigMap"
                     and d["metadata"]["name"].startswith("ivr-flows-"))
    # The generated (hashed) name reached the Deployment's volume.
    assert volumes["flows"]["configMap"]["name"] == flows_map["metadata"]["name"]
    assert set(flows_map["data"]) == {p.name for p in (ROOT / "flows").glob("*.yaml")}


def _container() -> dict[str, Any]:
    spec = _manifests()["Deployment"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return dict(container)


def _env_literals() -> dict[str, str]:
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "ivr-env"]
    return dict(line.split("=", 1) for line in generator["literals"])


def test_probes_point_at_readyz_and_healthz() -> None:
    container = _container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names
    assert port_names[container["readinessProbe"]["httpGet"]["port"]] == Settings().port


def test_the_grace_period_covers_the_pause_the_drain_and_the_goodbye() -> None:
    spec = _manifests()["Deployment"]["spec"]["template"]["spec"]
    drain = int(_env_literals()["IVR_DRAIN_S"])
    pause = 0
    pre_stop = _container().get("lifecycle", {}).get("preStop", {})
    if "exec" in pre_stop:
        assert pre_stop["exec"]["command"][0] == "sleep"
        pause = int(pre_stop["exec"]["command"][1])
    # 10 s for the goodbye prompt and the store's last writes after the drain.
    assert spec["terminationGracePeriodSeconds"] >= pause + drain + 10
    strategy = _manifests()["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0 and strategy["maxSurge"] >= 1


def test_flows_and_secrets_come_from_what_the_kustomization_provides() -> None:
    container = _container()
    spec = _manifests()["Deployment"]["spec"]["template"]["spec"]
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    generated = {g["name"] for g in kustomization["configMapGenerator"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert volumes[mounts[env["IVR_FLOWS"]]]["configMap"]["name"] in generated
    refs = container["envFrom"]
    assert {r["configMapRef"]["name"] for r in refs if "configMapRef" in r} <= generated
    (secret_name,) = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
    # The Secret is made from secret.env.example's keys: it validates, carries the tokens
    # and a PostgreSQL URL, and every key is a setting the server reads.
    secret_data = env_file(KUBE / "secret.env.example")
    _validate({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
               "metadata": {"name": secret_name}, "stringData": secret_data})
    assert {"TWILIO_AUTH_TOKEN", "IVR_STREAM_SECRET", "IVR_METRICS_TOKEN", "IVR_DB"} <= set(
        secret_data)
    assert urlsplit(secret_data["IVR_DB"]).scheme == "postgresql"
    for key in [*secret_data, *_env_literals(), *env]:
        assert key in KNOWN_SETTINGS, f"{key} is not a setting of ivr/config.py"
    # Writable paths are volumes: the root filesystem is read-only.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"/tmp", str(Path(env["IVR_CACHE_DIR"]).parent)} <= set(mounts)
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_the_flows_copy_matches_the_repository_flows() -> None:
    """kustomize reads nothing outside deploy/kubernetes: its flows/ is a copy that
    `make deploy-flows` refreshes. A flow edited in flows/ alone fails here."""
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "ivr-flows"]
    listed = {Path(f).name for f in generator["files"]}
    originals = {p.name: p for p in (ROOT / "flows").glob("*.yaml")}
    assert listed == set(originals), "configMapGenerator must list every flows/*.yaml"
    for name, original in originals.items():
        copy = KUBE / "flows" / name
        assert copy.read_bytes() == original.read_bytes(), (
            f"deploy/kubernetes/flows/{name} differs from flows/{name}: run make deploy-flows")


def test_ingress_keeps_websockets_open_behind_tls() -> None:
    ingress = _manifests()["Ingress"]
    annotations = ingress["metadata"]["annotations"]
    for key in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{key}"]) >= 3600
    hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    assert {r["host"] for r in ingress["spec"]["rules"]} <= hosts
    assert urlsplit(_env_literals()["IVR_PUBLIC_URL"]).hostname in hosts
    service = _manifests()["Service"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]


def test_autoscaler_and_disruption_budget_select_the_deployment() -> None:
    manifests = _manifests()
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = manifests["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    pdb_selector = manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert pdb_selector.items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()


# -- Dockerfile -------------------------------------------------------------------------


def test_dockerfile_final_stage_is_313_nonroot_with_healthcheck_and_sigterm() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: a builder and the final image"
    final = stages[-1]
    for stage in stages:
        image = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.13(\.\d+)?-slim(-\w+)?", image), image
    user = _one(final, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert "/healthz" in _one(final, "HEALTHCHECK")
    assert _one(final, "STOPSIGNAL") == "SIGTERM"
    assert json_list(_one(final, "CMD"))[:4] == ["ivr", "serve", "--host", "0.0.0.0"]
    # The venv is built in the builder and copied; no compiler is installed in the final.
    assert any(ins == "COPY" and "--from=" in rest and "/opt/venv" in rest
               for ins, rest in final)
    final_runs = " ".join(rest for ins, rest in final if ins == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|pip install)\b", final_runs)
    env = dockerfile_env(final)
    assert env["IVR_FLOWS"] and env["IVR_CACHE_DIR"]
    assert any(ins == "VOLUME" and str(Path(env["IVR_CACHE_DIR"]).parent) in rest
               for ins, rest in final)


def json_list(text: str) -> list[str]:
    """An exec-form instruction (CMD ["a", "b"]) as its list."""
    value = yaml.safe_load(text)
    assert isinstance(value, list), f"exec form expected: {text}"
    return [str(v) for v in value]


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().split()
    assert lines[lines.index("*") + 1:]  # everything ignored but what is re-included
    assert {"!pyproject.toml", "!ivr/", "!flows/"} <= set(lines)


# -- Compose ----------------------------------------------------------------------------


def test_compose_stack_and_env_example_agree() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"ivr", "postgres", "prometheus"} <= set(services)
    example = env_file(DEPLOY / "ivr.env.example")
    for service in services.values():
        assert service["env_file"] == ["ivr.env"]
    assert {"TWILIO_AUTH_TOKEN", "IVR_PUBLIC_URL", "IVR_METRICS_TOKEN", "IVR_DB"} <= set(example)
    for key in example:
        assert key.startswith("POSTGRES_") or key in KNOWN_SETTINGS, key
    # The database URL names the postgres service and the credentials it is started with.
    db = urlsplit(example["IVR_DB"])
    assert db.scheme == "postgresql" and db.hostname == "postgres"
    assert (db.username, db.password, db.path.lstrip("/")) == (
        example["POSTGRES_USER"], example["POSTGRES_PASSWORD"], example["POSTGRES_DB"])
    ivr = services["ivr"]
    assert ivr["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (DEPLOY / ivr["build"]["context"] / ivr["build"]["dockerfile"]).is_file()
    assert ivr["depends_on"]["postgres"]["condition"] == "service_healthy"
    grace = int(str(ivr["stop_grace_period"]).rstrip("s"))
    assert grace >= int(example["IVR_DRAIN_S"]) + 10
    # The container as Compose starts it would pass the server's start-up check.
    final_env = dockerfile_env(dockerfile_stages()[-1])
    settings = Settings.from_env({**final_env, **example}, host="0.0.0.0")
    assert startup_refusal(settings) is None


def test_prometheus_scrapes_metrics_with_the_token_compose_writes() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["type"] == "Bearer"
    token_file = job["authorization"]["credentials_file"]
    entrypoint = " ".join(compose["services"]["prometheus"]["entrypoint"])
    assert f'"$$IVR_METRICS_TOKEN" > {token_file}' in entrypoint
    (target,) = job["static_configs"][0]["targets"]
    assert target == f"ivr:{Settings().port}"
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


# -- Grafana ----------------------------------------------------------------------------


def test_grafana_dashboard_queries_only_series_the_server_exports() -> None:
    """Every ivr_* series the dashboard queries is one /metrics serves (a renamed metric
    fails here, not as an empty panel in production)."""
    from prometheus_client import generate_latest

    from ivr.analytics.metrics import Metrics

    exported = set(re.findall(r"^# TYPE (\w+) (?:counter|gauge|histogram)",
                              generate_latest(Metrics().registry).decode(), re.M))
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            for name in re.findall(r"\bivr_\w+", target["expr"]):
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert family in exported or family.removesuffix("_total") in {
                    e.removesuffix("_total") for e in exported}, name
                queried.add(family)
    assert {"ivr_active_calls", "ivr_calls_total", "ivr_turn_latency_seconds",
            "ivr_cost_usd_total", "ivr_calls_refused_total",
            "ivr_event_loop_lag_p99_seconds"} <= queried
