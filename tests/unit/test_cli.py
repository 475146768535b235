"""The CLI's contract: one-line errors for bad arguments, stable JSON, masked secrets."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from switchboard.cli.main import main
from switchboard.core.settings import Settings
from tests.support import one_error_line, run_cli

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "argv",
    [
        ["kafka", "bogus"],
        ["worker", "frontend"],
        ["worker", "backend", "--concurrency", "0"],
        ["submit", "x", "--wait", "soon"],
        ["submit", "x", "--specialist", "ux"],
    ],
)
def test_bad_arguments_are_one_line_that_says_what_to_change(argv: list[str]) -> None:
    line = one_error_line(run_cli(*argv), 2)
    assert "error:" in line and "--help" in line
    # The line names the command as a user types it, not the top-level usage.
    assert line.startswith(f"switchboard {argv[0]}") and "COMMAND" not in line, line


def test_bad_setting_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWITCHBOARD_PARTITIONS", "zero")
    assert main(["settings"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "partitions" in err[0]


def test_submit_needs_text_or_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["submit"]) == 1
    assert "TEXT or --file" in capsys.readouterr().err


def test_topics_list_json_has_roles(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["topics", "list", "--json"]) == 0
    topics = json.loads(capsys.readouterr().out)
    roles = {t["role"] for t in topics}
    assert {"requests", "responses", "dlq", "tasks:backend", "tasks:security", "retry:1s"} <= roles
    assert all(set(t) == {"role", "name"} for t in topics)


def test_settings_print_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-very-secret")
    monkeypatch.setenv(
        "SWITCHBOARD_KAFKA_CONFIG",
        json.dumps({"security.protocol": "SASL_SSL", "sasl.password": "hunter2"}),
    )
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "sk-very-secret" not in out and "hunter2" not in out
    data = json.loads(out)
    assert data["kafka_config"] == {"security.protocol": "SASL_SSL", "sasl.password": "***"}


def test_bootstrap_env_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka.example:9093")
    assert Settings().bootstrap_servers == "kafka.example:9093"


def test_impossible_settings_say_what_to_change() -> None:
    with pytest.raises(ValueError, match="triage=model needs ANTHROPIC_API_KEY"):
        Settings(triage="model", anthropic_api_key=None)


def test_compose_file_runs_official_kafka_in_kraft_mode() -> None:
    compose = yaml.safe_load((REPO / "infra" / "docker-compose.yml").read_text())
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:4.")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "9092:9092" in kafka["ports"]


def test_tenants_and_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHBOARD_TENANTS", "acme, beta")
    monkeypatch.setenv("SWITCHBOARD_MODELS", '{"backend": "claude-haiku-5-5"}')
    settings = Settings()
    assert settings.tenants == frozenset({"acme", "beta"})
    assert settings.models["backend"] == "claude-haiku-5-5"
    assert settings.models["security"] == "claude-opus-5-5"  # the others keep their defaults


def test_help_speaks_to_users_and_lists_every_command_in_a_group(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    description = out.split("\n\n", 2)[1]
    assert description.startswith("Switchboard: a Kafka pipeline")
    assert "entry point" not in out and "``" not in out  # not the module's developer docstring
    for title in ("run the pipeline:", "topics:", "local Kafka broker:", "dead-letter queue:"):
        assert title in out
    assert "other commands:" not in out  # every command has its group
    listed = {
        line.split()[0]
        for line in out.splitlines()
        if line.startswith("  ") and line[2:3].isalpha()
    }
    commands = {"settings", "kafka", "topics", "submit", "router", "worker", "relay", "up"}
    assert commands | {"demo", "dlq", "fake-anthropic"} <= listed
    assert "--version" in out and "-v, --verbose" in out


def test_version_is_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"switchboard {version('switchboard')}"


def test_fake_anthropic_without_aiohttp_is_one_line_saying_what_to_install() -> None:
    # None in sys.modules makes `import aiohttp` fail as if it were not installed.
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"
        "from switchboard.cli.main import main\n"
        "sys.exit(main(['fake-anthropic', '--port', '0']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "switchboard: error: fake-anthropic needs aiohttp: pip install 'switchboard[fake]'"
    )


def test_a_crash_in_native_code_prints_the_python_stacks() -> None:
    """A segfault under a command (librdkafka, RocksDB) ends with every thread's Python stack
    on stderr, naming where it was, not with a silent -11."""
    crash = (
        "import ctypes, sys\n"
        "import switchboard.cli.main as cli\n"
        "def handler(*_args):\n"
        "    ctypes.string_at(0)  # a read of address 0: SIGSEGV\n"
        "cli.configure_logging = handler  # main calls it once the arguments parse\n"
        "sys.exit(cli.main(['settings']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", crash], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == -11
    assert "Fatal Python error: Segmentation fault" in out.stderr
    assert "in handler" in out.stderr and "in main" in out.stderr
