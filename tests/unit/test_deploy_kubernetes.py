"""The Kubernetes manifests under infra/k8s hold issue 11's deployment contract.

Every manifest, base and overlay, as written and as kustomize renders it, validates against
the Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields fail) and the KEDA
CRDs' own OpenAPI schemas (tests/fixtures/keda, made strict the same way). On top of the
schemas, the checks an operator would make by reading: probes, drain time, budgets, static
membership, KEDA's topic, group, threshold and bounds, and the overlay's patches landing.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
KEDA_CRDS = REPO / "tests" / "fixtures" / "keda"
#: The Kubernetes version whose schemas the manifests must meet (shipped in kubernetes-validate).
K8S_VERSION = "1.33"
SPECIALISTS = ("backend", "api", "data", "perf", "security")
WORKERS = tuple(f"worker-{s}" for s in SPECIALISTS)
DEPLOYMENTS = ("router", "relay", *WORKERS)
METRICS_PORT = 9464
KUSTOMIZE_HINT = (
    "kustomize is needed to render infra/k8s: "
    "`go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1` (about a minute) or kubectl's "
    "built-in `kubectl kustomize`"
)

Doc = dict[str, Any]


# ---- loading ------------------------------------------------------------------------------


#: libyaml's loader where PyYAML has it: the pure-Python one makes these tests seconds slower.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@cache
def _parse(text: str) -> tuple[Doc, ...]:
    """Parsed once per text; callers that change a document deep-copy it first."""
    return tuple(doc for doc in yaml.load_all(text, Loader=_Loader) if doc)


def _load(path: Path) -> list[Doc]:
    return list(_parse(path.read_text()))


def _kustomization(folder: Path) -> Doc:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def _own_resource_files(folder: Path) -> list[Path]:
    """The files a kustomization lists as resources, without other kustomizations."""
    paths = [(folder / entry).resolve() for entry in _kustomization(folder)["resources"]]
    return [p for p in paths if p.is_file()]


@cache
def _kustomize_command() -> tuple[str, ...] | None:
    if exe := shutil.which("kustomize"):
        return (exe, "build")
    gopath = os.environ.get("GOPATH") or str(Path.home() / "go")
    for gobin in (os.environ.get("GOBIN"), os.path.join(gopath, "bin")):
        if gobin and (Path(gobin) / "kustomize").is_file():
            return (str(Path(gobin) / "kustomize"), "build")
    if exe := shutil.which("kubectl"):
        return (exe, "kustomize")
    return None


@cache
def _rendered(folder: Path) -> tuple[Doc, ...]:
    command = _kustomize_command()
    if command is None:
        pytest.fail(KUSTOMIZE_HINT)
    out = subprocess.run(
        [*command, str(folder)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"{' '.join(command)} {folder}: {out.stderr}"
    return _parse(out.stdout)


@cache
def _base_docs() -> tuple[Doc, ...]:
    return tuple(doc for path in _own_resource_files(BASE) for doc in _load(path))


def _one(docs: list[Doc] | tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _all(docs: list[Doc] | tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


# ---- schemas ------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it with strict field validation (kubectl's
    default): an object with declared properties accepts no others, unless marked to keep
    unknown fields. Without this a typo such as ``maxReplicas`` would pass, then be pruned."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@cache
def _keda_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    validators = {}
    for path in sorted(KEDA_CRDS.glob("*.yaml")):
        (crd,) = _load(path)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = _strict(version["schema"]["openAPIV3Schema"])
            validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def validate(doc: Doc) -> None:
    """Raise unless ``doc`` is a valid resource of a Kubernetes or KEDA kind."""
    key = (doc["apiVersion"], doc["kind"])
    if doc["apiVersion"].startswith("keda.sh/"):
        validator = _keda_validators().get(key)
        assert validator is not None, f"no KEDA schema for {key} in {KEDA_CRDS}"
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            raise AssertionError(
                "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
            )
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_keda_schemas_cover_the_kinds_used() -> None:
    assert ("keda.sh/v1alpha1", "ScaledObject") in _keda_validators()
    assert ("keda.sh/v1alpha1", "TriggerAuthentication") in _keda_validators()


MANIFEST_FILES = _own_resource_files(BASE) + _own_resource_files(OVERLAY)


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_manifest_file_validates(path: Path) -> None:
    """Each resource file of the base and of the overlay, as written."""
    docs = _load(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert "namespace" not in doc["metadata"] or doc["kind"] == "Namespace", (
            f"{path}: the namespace belongs to the overlay"
        )
        validate(doc)


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kustomize_build_renders_valid_manifests(folder: Path) -> None:
    """What `kustomize build` makes of the base and of the overlay, patches applied."""
    docs = _rendered(folder)
    assert len(docs) >= 24
    for doc in docs:
        validate(doc)


def _scaled_object() -> Doc:
    return copy.deepcopy(_one(_base_docs(), "ScaledObject", "worker-backend"))


def _set(doc: Doc, path: str, value: Any) -> Doc:
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[int(last) if last.isdigit() else last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("spec.maxReplicas", 6),  # a typo of maxReplicaCount
        ("spec.triggers.0.metadata.lagThreshold", 5),  # trigger metadata values are strings
        ("spec.minReplicaCount", "1"),
        ("spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleUp.policies.0.type", 3),
        ("spec.scaleTargetRef", {}),  # name is required
    ],
)
def test_keda_validation_rejects_mistakes(path: str, value: Any) -> None:
    """The KEDA check can fail: each of these is a mistake the API server would refuse."""
    with pytest.raises(AssertionError):
        validate(_set(_scaled_object(), path, value))


def test_kubernetes_validation_rejects_unknown_fields() -> None:
    deployment = copy.deepcopy(_one(_base_docs(), "Deployment", "router"))
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


# ---- kustomizations, checked without kustomize ------------------------------------------


def _matches(doc: Doc, target: Doc) -> bool:
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    labels = doc["metadata"].get("labels", {})
    if "labelSelector" in target:
        key, _, value = target["labelSelector"].partition("=")
        if labels.get(key) != value:
            return False
    return (
        target.get("kind", doc["kind"]) == doc["kind"]
        and target.get("name", doc["metadata"]["name"]) == doc["metadata"]["name"]
        and target.get("group", group) == group
    )


@pytest.mark.parametrize("folder", [BASE, OVERLAY], ids=["base", "overlay"])
def test_kustomization_files_exist(folder: Path) -> None:
    kustomization = _kustomization(folder)
    for entry in kustomization["resources"]:
        path = (folder / entry).resolve()
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{folder}: {entry}"
    for patch in kustomization.get("patches", []):
        assert (folder / patch["path"]).is_file(), f"{folder}: {patch['path']}"


def test_overlay_patches_target_existing_resources() -> None:
    """Every patch, image, and replica entry of the overlay lands on something in the base;
    a patch that matches nothing is a silent no-op in kustomize."""
    docs = _base_docs()
    overlay = _kustomization(OVERLAY)
    for patch in overlay["patches"]:
        body = _load(OVERLAY / patch["path"])
        if "target" in patch:
            target = patch["target"]
        else:
            (only,) = body
            target = {"kind": only["kind"], "name": only["metadata"]["name"]}
        hits = [d for d in docs if _matches(d, target)]
        assert hits, f"{patch['path']} patches nothing ({target})"
    images = {
        c["image"].split(":")[0]
        for d in _all(docs, "Deployment") + _all(docs, "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert {image["name"] for image in overlay["images"]} <= images
    for replica in overlay["replicas"]:
        _one(docs, "Deployment", replica["name"])
        assert replica["name"] not in WORKERS, "KEDA owns the workers' replica counts"


# ---- the contract, on the base -------------------------------------------------------------


def _config() -> dict[str, str]:
    return dict(_one(_base_docs(), "ConfigMap", "switchboard-config")["data"])


def _container(deployment: Doc) -> Doc:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def _port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p["name"] == port)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_config_map_holds_the_container_settings() -> None:
    config = _config()
    assert config["SWITCHBOARD_METRICS_PORT"] == str(METRICS_PORT)
    assert config["SWITCHBOARD_METRICS_ADDR"] == "0.0.0.0"
    assert config["SWITCHBOARD_LOG_FORMAT"] == "json"
    assert config["SWITCHBOARD_TOPIC_PREFIX"] == "switchboard"
    assert int(config["SWITCHBOARD_PARTITIONS"]) == 6
    assert config["KAFKA_BOOTSTRAP_SERVERS"]
    secret_words = ("KEY", "PASSWORD", "KAFKA_CONFIG", "TOKEN")
    assert not [k for k in config if any(w in k for w in secret_words)], "secrets in ConfigMap"


@pytest.mark.parametrize("name", DEPLOYMENTS)
def test_deployment_follows_the_contract(name: str) -> None:
    docs = _base_docs()
    deployment = _one(docs, "Deployment", name)
    pod = deployment["spec"]["template"]
    spec, container = pod["spec"], _container(deployment)
    specialist = name.removeprefix("worker-")
    if name in WORKERS:
        assert container["args"] == [
            "worker",
            specialist,
            "--concurrency",
            "$(SWITCHBOARD_CONCURRENCY)",
        ]
        # $(VAR) in args expands only from variables the container defines.
        env_names = [e["name"] for e in container["env"]]
        assert "SWITCHBOARD_CONCURRENCY" in env_names
    else:
        assert container["args"] == [name]
    assert container["image"] == "switchboard:latest"

    # Probes on the metrics port: liveness /healthz, readiness /readyz.
    probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
        assert _port(container, probe["port"]) == METRICS_PORT
    assert _port(container, "metrics") == METRICS_PORT

    # The drain finishes before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] > float(_config()["SWITCHBOARD_DRAIN_TIMEOUT_S"])

    resources = container["resources"]
    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound]), f"{name}: {bound}"

    # Non-root, read-only root filesystem, nothing to escalate, /tmp writable.
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"mountPath": "/tmp", "name": "tmp"} in container["volumeMounts"]
    if name != "relay":  # the router and workers keep the answered index's stores there
        assert {"mountPath": "/var/lib/switchboard", "name": "answered"} in container[
            "volumeMounts"
        ]
        assert {"name": "answered", "emptyDir": {"sizeLimit": "20Gi"}} in spec["volumes"]
    assert spec["automountServiceAccountToken"] is False

    # Config from the ConfigMap, secrets from the Secret, static membership from the pod name.
    assert container["envFrom"] == [{"configMapRef": {"name": "switchboard-config"}}]
    env = {e["name"]: e for e in container["env"]}
    assert env["SWITCHBOARD_INSTANCE_ID"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    secret_names = {s["metadata"]["name"] for s in _all(docs, "Secret")}
    secret_refs = [e["valueFrom"].get("secretKeyRef") for e in env.values() if "valueFrom" in e]
    secret_refs = [r for r in secret_refs if r]
    assert {r["name"] for r in secret_refs} <= secret_names
    assert "SWITCHBOARD_KAFKA_CONFIG" in env
    assert ("ANTHROPIC_API_KEY" in env) == (name in WORKERS)
    # Optional: the placeholder Secret has no keys, and a missing key means "not set".
    assert all(r.get("optional") for r in secret_refs)

    # Scraped: annotations for annotation-based scrapers, a label for the headless Service.
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    service = _one(docs, "Service", "switchboard-metrics")
    assert service["spec"]["clusterIP"] == "None"
    assert _selects(service["spec"]["selector"], pod["metadata"]["labels"])

    # The selector picks this Deployment's pods and no other's.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert _selects(selector, pod["metadata"]["labels"])
    others = [d for d in _all(docs, "Deployment") if d["metadata"]["name"] != name]
    assert not [
        d for d in others if _selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]

    # A disruption budget over exactly these pods that still lets a node drain.
    budget = _one(docs, "PodDisruptionBudget", name)
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]


def test_workers_leave_replicas_to_keda_and_relay_router_are_fixed() -> None:
    docs = _base_docs()
    for name in WORKERS:
        assert "replicas" not in _one(docs, "Deployment", name)["spec"], name
    for name in ("router", "relay"):
        assert _one(docs, "Deployment", name)["spec"]["replicas"] >= 1


def test_topics_job_ensures_topics_and_is_not_scraped() -> None:
    docs = _base_docs()
    job = _one(docs, "Job", "switchboard-topics")
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["topics", "ensure"]
    assert container["envFrom"] == [{"configMapRef": {"name": "switchboard-config"}}]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = _one(docs, "Service", "switchboard-metrics")
    assert not _selects(service["spec"]["selector"], pod["metadata"]["labels"])


@pytest.mark.parametrize("specialist", SPECIALISTS)
def test_scaled_object_scales_its_worker_on_its_task_topic(specialist: str) -> None:
    docs = _base_docs()
    prefix = _config()["SWITCHBOARD_TOPIC_PREFIX"]
    partitions = int(_config()["SWITCHBOARD_PARTITIONS"])
    scaled = _one(docs, "ScaledObject", f"worker-{specialist}")
    spec = scaled["spec"]
    _one(docs, "Deployment", spec["scaleTargetRef"]["name"])
    assert spec["scaleTargetRef"]["name"] == f"worker-{specialist}"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] >= 0
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == f"{prefix}.tasks.{specialist}"
    assert meta["consumerGroup"] == f"{prefix}.worker.{specialist}"
    # Seconds per record: a few records of lag per replica is already a backlog.
    assert 1 <= int(meta["lagThreshold"]) <= 10
    assert meta["offsetResetPolicy"] in {"latest", "earliest"}
    assert meta.get("allowIdleConsumers", "false") == "false"
    # The bootstrap comes from the scale target's environment, where the ConfigMap puts it.
    if "bootstrapServersFromEnv" in meta:
        assert meta["bootstrapServersFromEnv"] in _config()
    else:
        assert meta["bootstrapServers"]


def test_only_the_workers_are_scaled() -> None:
    """The relay pauses its delay-tier partitions on purpose: lag there is not a backlog."""
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in _all(_base_docs(), "ScaledObject")}
    assert targets == set(WORKERS)
    assert not _all(_base_docs(), "HorizontalPodAutoscaler")


# ---- the overlay, as rendered -------------------------------------------------------------


def test_overlay_renders_a_namespaced_pinned_deployment() -> None:
    docs = _rendered(OVERLAY)
    overlay = _kustomization(OVERLAY)
    namespace = overlay["namespace"]
    _one(docs, "Namespace", namespace)
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, doc["metadata"]["name"]
    (image,) = overlay["images"]
    pinned = f"{image['newName']}:{image['newTag']}"
    pods = [d["spec"]["template"]["spec"] for d in _all(docs, "Deployment") + _all(docs, "Job")]
    assert {c["image"] for pod in pods for c in pod["containers"]} == {pinned}
    base_bootstrap = _config()["KAFKA_BOOTSTRAP_SERVERS"]
    config = _one(docs, "ConfigMap", "switchboard-config")["data"]
    assert config["KAFKA_BOOTSTRAP_SERVERS"] not in {"", base_bootstrap}
    assert config["SWITCHBOARD_METRICS_PORT"] == str(METRICS_PORT), "the patch merges"
    for replica in overlay["replicas"]:
        assert _one(docs, "Deployment", replica["name"])["spec"]["replicas"] == replica["count"]
    for name in WORKERS:
        deployment = _one(docs, "Deployment", name)
        assert "replicas" not in deployment["spec"]
        limits = _container(deployment)["resources"]["limits"]
        assert limits["memory"] != "1Gi", f"{name}: the resources patch did not land"


def test_overlay_scaled_objects_authenticate_with_sasl() -> None:
    docs = _rendered(OVERLAY)
    auths = {a["metadata"]["name"]: a for a in _all(docs, "TriggerAuthentication")}
    secrets = {s["metadata"]["name"] for s in _all(docs, "Secret")}
    partitions = int(
        _one(docs, "ConfigMap", "switchboard-config")["data"]["SWITCHBOARD_PARTITIONS"]
    )
    scaled_objects = _all(docs, "ScaledObject")
    assert len(scaled_objects) == len(SPECIALISTS)
    for scaled in scaled_objects:
        assert scaled["spec"]["maxReplicaCount"] <= partitions
        (trigger,) = scaled["spec"]["triggers"]
        auth = auths[trigger["authenticationRef"]["name"]]
        parameters = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert {"sasl", "username", "password", "tls"} <= parameters
        assert {ref["name"] for ref in auth["spec"]["secretTargetRef"]} <= secrets
