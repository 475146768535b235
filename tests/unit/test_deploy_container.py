"""The container image and the compose stack hold issue 11's deployment contract.

No Docker engine is needed: infra/Dockerfile is parsed with dockerfile-parse, the root
.dockerignore is evaluated with Docker's own matching rules, and infra/compose.yml, the
Prometheus and Grafana files are parsed with PyYAML and checked against each other.
"""

from __future__ import annotations

import importlib.resources
import io
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from dockerfile_parse import DockerfileParser

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
DOCKERFILE = INFRA / "Dockerfile"
SPECIALISTS = ("backend", "api", "data", "perf", "security")
PIPELINE = ("router", "relay", *(f"worker-{s}" for s in SPECIALISTS))
METRICS_PORT = 9464
DRAIN_TIMEOUT_S = 30

# ---- Dockerfile ---------------------------------------------------------------------------

#: Packages that would put a compiler or build toolchain in an image.
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|cc|make|cmake|libc6-dev|python3?-dev|rustc|cargo)\b"
)
#: The extras the image installs: msk, so SWITCHBOARD_KAFKA_AUTH=aws-msk-iam works in it.
IMAGE_EXTRAS = ("msk",)
PACKAGE_INSTALL = re.compile(r"\b(apt-get|apt|apk|dnf|yum|microdnf)\b[^&;|]*\b(install|add)\b")


def _stages(parser: DockerfileParser) -> list[list[dict[str, Any]]]:
    """The instructions of each build stage, in order (what precedes the first FROM is dropped)."""
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict[str, Any]], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def dockerfile_problems(text: str) -> list[str]:
    """What in a Dockerfile breaks the image contract; empty when it holds."""
    # A file object, so that setting the content writes nothing to disk.
    parser = DockerfileParser(fileobj=io.StringIO(text))
    stages = _stages(parser)
    problems: list[str] = []
    if len(stages) < 2:
        return ["not multi-stage: the wheel must be built in a stage of its own"]
    final = stages[-1]
    final_base = parser.parent_images[-1]
    if not re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", final_base):
        problems.append(f"final stage is FROM {final_base}, not a python:3.11 slim image")
    users = _values(final, "USER")
    if not users:
        problems.append("final stage has no USER: it would run as root")
    elif users[-1].split(":")[0] in {"root", "0"}:
        problems.append(f"final stage runs as {users[-1]}")
    runs = _values(final, "RUN")
    for run in runs:
        for install in PACKAGE_INSTALL.finditer(run):
            rest = run[install.start() :]
            if tool := BUILD_TOOLS.search(rest.split("&&")[0]):
                problems.append(f"final stage installs build tool {tool.group(0)!r}")
        if re.search(r"pip[^&;]*install[^&;]*\b(build|setuptools-scm|cython)\b", run):
            problems.append("final stage pip-installs a build tool")
    if any(shlex.split(value)[0] in {".", "./"} for value in _values(final, "COPY")):
        problems.append("final stage copies the source tree; it must take only the wheel")
    builds_wheel = any(
        re.search(r"\bbuild\b[^&]*--wheel|\bpip\b[^&]*\bwheel\b", run)
        for stage in stages[:-1]
        for run in _values(stage, "RUN")
    )
    if not builds_wheel:
        problems.append("no earlier stage builds a wheel")
    from_builder = re.compile(r"--from=\w+|from=\w+")
    installs_wheel = any(
        re.search(r"pip[^&;]*install", run) and ("whl" in run or "--find-links" in run)
        for run in runs
    ) and any(
        from_builder.search(line)
        for line in _values(final, "RUN") + _values(final, "COPY")
        if "wheel" in line or "whl" in line
    )
    if not installs_wheel:
        problems.append("final stage does not pip-install the wheel taken from the builder")
    for extra in IMAGE_EXTRAS:
        with_extra = re.compile(rf"\[[\w,\s]*\b{extra}\b[\w,\s]*\]")
        if not any(re.search(r"pip[^&;]*install", r) and with_extra.search(r) for r in runs):
            problems.append(f"final stage does not install switchboard[{extra}]")
        if not any(
            re.search(r"pip[^&;]*wheel", run) and with_extra.search(run)
            for stage in stages[:-1]
            for run in _values(stage, "RUN")
        ):
            problems.append(f"no earlier stage builds the wheels of the {extra} extra")
    entrypoints = _values(final, "ENTRYPOINT")
    if not entrypoints or json.loads(entrypoints[-1]) != ["switchboard"]:
        problems.append(f'ENTRYPOINT is {entrypoints[-1:] or "missing"}, not ["switchboard"]')
    if str(METRICS_PORT) not in " ".join(_values(final, "EXPOSE")).split():
        problems.append(f"final stage does not EXPOSE {METRICS_PORT}")
    if not _values(final, "HEALTHCHECK"):
        problems.append("no HEALTHCHECK decision (a check, or NONE with the reason)")
    return problems


def test_dockerfile_holds_the_image_contract() -> None:
    """Multi-stage; final stage python:3.11-slim, a non-root USER, no compilers, the wheel from
    the builder installed with pip, with the msk extra, ENTRYPOINT ["switchboard"], EXPOSE
    9464."""
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_dockerfile_sets_container_defaults() -> None:
    """The image itself serves metrics on 0.0.0.0:9464 and logs JSON, as the contract says."""
    parser = DockerfileParser(path=str(DOCKERFILE))
    assert parser.envs["SWITCHBOARD_METRICS_PORT"] == str(METRICS_PORT)
    assert parser.envs["SWITCHBOARD_METRICS_ADDR"] == "0.0.0.0"
    assert parser.envs["SWITCHBOARD_LOG_FORMAT"] == "json"
    users = _values(_stages(parser)[-1], "USER")
    assert users[-1].split(":")[0].isdigit(), "a numeric uid lets runAsNonRoot verify it"


GOOD = DOCKERFILE.read_text()


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda t: t.split("# ---- runtime")[0], "not multi-stage"),
        (lambda t: t.replace("USER 10001:10001", "USER root"), "runs as root"),
        (lambda t: t.replace("USER 10001:10001\n", ""), "no USER"),
        (
            lambda t: t.replace(
                "WORKDIR /app", "RUN apt-get update && apt-get install -y gcc\nWORKDIR /app"
            ),
            "build tool 'gcc'",
        ),
        (
            lambda t: t.replace(
                "WORKDIR /app",
                "RUN apt-get install -y --no-install-recommends build-essential\nWORKDIR /app",
            ),
            "build tool 'build-essential'",
        ),
        (lambda t: t.replace("FROM ${PYTHON_IMAGE} AS runtime", "FROM python:3.11"), "not a"),
        (lambda t: t.replace('ENTRYPOINT ["switchboard"]', 'ENTRYPOINT ["python"]'), "ENTRYPOINT"),
        (lambda t: t.replace("EXPOSE 9464", "EXPOSE 8000"), "EXPOSE 9464"),
        (lambda t: t.replace("WORKDIR /app", "COPY . /app\nWORKDIR /app"), "source tree"),
        (lambda t: t.replace("from=builder,", ""), "does not pip-install the wheel"),
        (lambda t: t.replace('"switchboard[msk]"', "switchboard"), "install switchboard[msk]"),
        (lambda t: t.replace('"$1[msk]"', '"$1"'), "wheels of the msk extra"),
    ],
)
def test_dockerfile_check_catches_each_breach(mutate: Any, problem: str) -> None:
    """Each rule of the check fails on a Dockerfile that breaks it (the check can fail)."""
    problems = dockerfile_problems(mutate(GOOD))
    assert any(problem in p for p in problems), problems


# ---- .dockerignore -----------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern that matches
    the path or one of its parent folders decides, a ``!`` pattern putting it back."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = _dockerignore_regex(pattern)
        if any(regex.match(c) for c in candidates):
            excluded = not negated
    return excluded


DOCKERIGNORE = (REPO / ".dockerignore").read_text().splitlines()


def test_dockerignore_matcher_follows_docker_rules() -> None:
    """The matcher itself: parents count, ``**`` spans folders, the last match wins."""
    lines = ["**/__pycache__", "infra/*", "!infra/kafka", "*.md", "!README.md"]
    assert dockerignored("a/b/__pycache__/x.pyc", lines)
    assert dockerignored("infra/k8s/base/x.yaml", lines)
    assert not dockerignored("infra/kafka/pom.xml", lines)
    assert not dockerignored("infra", lines)
    assert dockerignored("NOTES.md", lines) and not dockerignored("README.md", lines)
    assert not dockerignored("docs/x.md", lines)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "switchboard/cli/main.py",
        "switchboard/core/settings.py",
        "producers/__init__.py",
        "consumers/runtime/loop.py",
        "consumers/specialists/personas/backend.md",
        "schemas/DeadLetter/v1.avsc",
        "infra/kafka/pom.xml",
    ],
)
def test_dockerignore_keeps_what_the_wheel_needs(path: str) -> None:
    assert (REPO / path).exists(), path
    assert not dockerignored(path, DOCKERIGNORE), f"{path} is left out of the build context"


def test_dockerignore_keeps_every_symlink_target_in_the_packages() -> None:
    """Package data reached through symlinks (switchboard/core/schemas -> schemas/) must be in
    the context too, or the wheel silently ships without it."""
    links = [
        p for top in ("switchboard", "producers", "consumers") for p in (REPO / top).rglob("*")
    ]
    for link in (p for p in links if p.is_symlink()):
        target = link.resolve().relative_to(REPO)
        for file in [target, *(f.relative_to(REPO) for f in (REPO / target).rglob("*"))]:
            assert not dockerignored(file.as_posix(), DOCKERIGNORE), (link, file)


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".switchboard/kafka/data/meta.properties",
        ".venv/bin/python",
        "venv/bin/python",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "switchboard/core/__pycache__/settings.cpython-311.pyc",
        "switchboard.egg-info/PKG-INFO",
        "tests/unit/test_policy.py",
        "benchmarks/results/latest.json",
        "build/lib/x.py",
        "dist/switchboard-0.1.0-py3-none-any.whl",
        "infra/k8s/base/kustomization.yaml",
        "infra/compose.yml",
        ".env",
    ],
)
def test_dockerignore_leaves_out_local_state(path: str) -> None:
    assert dockerignored(path, DOCKERIGNORE), f"{path} would be sent to the builder"


# ---- compose -----------------------------------------------------------------------------

COMPOSE = yaml.safe_load((INFRA / "compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return dict(env)


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _compose_spec() -> jsonschema.protocols.Validator:
    """The Compose Specification's JSON schema, as vendored in the check-jsonschema wheel."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendor / "compose-spec.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("name", ["compose.yml", "docker-compose.yml"])
def test_compose_files_meet_the_compose_specification(name: str) -> None:
    document = yaml.safe_load((INFRA / name).read_text())
    errors = [
        f"{list(e.absolute_path)}: {e.message}" for e in _compose_spec().iter_errors(document)
    ]
    assert errors == []


def test_compose_specification_check_rejects_a_misspelt_key() -> None:
    document = yaml.safe_load((INFRA / "compose.yml").read_text())
    document["services"]["router"]["stop_grace_periods"] = "45s"
    assert not _compose_spec().is_valid(document)


def test_compose_has_every_service() -> None:
    assert set(SERVICES) == {"kafka", "topics", *PIPELINE, "prometheus", "grafana"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_compose_service_has_an_image_and_valid_dependencies(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), f"{name}: no image nor build"
    if "build" in service:
        context = (INFRA / service["build"]["context"]).resolve()
        assert context == REPO, f"{name}: the build context is the repository root"
        assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    for dependency, condition in _depends_on(service).items():
        assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        assert condition in {
            "service_started",
            "service_healthy",
            "service_completed_successfully",
        }
        if condition == "service_healthy":
            assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"


def test_compose_kafka_is_the_official_kraft_broker_and_matches_the_broker_only_file() -> None:
    """The same image as infra/docker-compose.yml (kept for the README's broker-only use), in
    KRaft mode, with an internal listener the pipeline containers reach."""
    kafka = SERVICES["kafka"]
    broker_only = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]
    assert set(broker_only) == {"kafka"}
    assert kafka["image"] == broker_only["kafka"]["image"] == "apache/kafka:4.1.1"
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "9092:9092" in kafka["ports"]
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["EXTERNAL"] == "localhost:9092"
    for name in ("topics", *PIPELINE):
        assert _env(SERVICES[name])["KAFKA_BOOTSTRAP_SERVERS"] == advertised["INTERNAL"], name


@pytest.mark.parametrize("name", ["topics", *PIPELINE])
def test_compose_pipeline_services_follow_the_contract(name: str) -> None:
    service = SERVICES[name]
    assert service["image"] == "switchboard:latest"
    expected = {
        "topics": ["topics", "ensure"],
        "router": ["router"],
        "relay": ["relay"],
    }
    command = service["command"]
    if name.startswith("worker-"):
        assert command[:2] == ["worker", name.removeprefix("worker-")]
        assert command[2] == "--concurrency" and int(command[3]) >= 1
    else:
        assert command == expected[name]
    env = _env(service)
    assert env["SWITCHBOARD_METRICS_PORT"] == str(METRICS_PORT)
    assert env["SWITCHBOARD_METRICS_ADDR"] == "0.0.0.0"
    assert env["SWITCHBOARD_LOG_FORMAT"] == "json"
    assert float(env["SWITCHBOARD_DRAIN_TIMEOUT_S"]) == DRAIN_TIMEOUT_S
    # Passed through from the shell, never set empty (an empty key is not "offline").
    assert env["ANTHROPIC_API_KEY"] is None
    # --scale replicas would share one static id and fence each other.
    assert "SWITCHBOARD_INSTANCE_ID" not in env
    if name == "topics":
        assert _depends_on(service) == {"kafka": "service_healthy"}
        assert service["restart"] == "no"
        return
    assert _depends_on(service) == {"topics": "service_completed_successfully"}
    assert str(METRICS_PORT) in service["expose"] and "ports" not in service
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace and int(grace.group(1)) > DRAIN_TIMEOUT_S
    probe = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{METRICS_PORT}/healthz" in probe


def test_compose_published_ports_are_unique_and_well_formed() -> None:
    published: list[str] = []
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            match = re.fullmatch(r"(?:[\d.]+:)?(\d+):(\d+)(?:/(?:tcp|udp))?", str(port))
            assert match, f"{name}: port {port!r} is not HOST:CONTAINER"
            published.append(match.group(1))
    assert len(published) == len(set(published)), published
    assert set(published) == {"9092", "9090", "3000"}


def test_compose_mounts_exist_and_named_volumes_are_declared() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in COMPOSE["volumes"], f"{name}: volume {source} undeclared"


def _mount_target(service: str, source: str) -> str:
    for volume in SERVICES[service]["volumes"]:
        parts = volume.split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{service} does not mount {source}")


def test_prometheus_config_passes_promtool() -> None:
    """Prometheus' own checker (Debian's prometheus package: apt-get install prometheus)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: apt-get install -y --no-install-recommends prometheus")
    out = subprocess.run(
        [promtool, "check", "config", str(INFRA / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_every_pipeline_process() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "switchboard")
    assert job["metrics_path"] == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["port"] == METRICS_PORT
    assert sorted(discovery["names"]) == sorted(PIPELINE)
    rules_dir = _mount_target("prometheus", "./prometheus/rules")
    assert all(rule.startswith(rules_dir + "/") for rule in config["rule_files"])
    assert _mount_target("prometheus", "./prometheus/prometheus.yml") in " ".join(
        SERVICES["prometheus"]["command"]
    )


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    grafana = INFRA / "grafana"
    (source,) = yaml.safe_load(
        (grafana / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load(
        (grafana / "provisioning" / "dashboards" / "switchboard.yml").read_text()
    )["providers"]
    assert provider["options"]["path"] == _mount_target("grafana", "./grafana/dashboards")
    assert _mount_target("grafana", "./grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards = sorted((grafana / "dashboards").glob("*.json"))
    assert dashboards, "no dashboard to provision"
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"]
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == source["uid"], (path.name, panel["title"])
    home = _env(SERVICES["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"] + "/")
    assert (grafana / "dashboards" / Path(home).name).exists()
