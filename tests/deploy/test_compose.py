"""docker-compose.yml and the images, checked without a Docker engine (none runs on these machines).

What a broken deployment would show a user at `docker compose up`: a missing service, a service nobody can
wait on (no healthcheck), a password in the repository, a worker without its GPU, an image whose command does
not exist in the package, an image running as root or on a moving base tag.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = {"api": ROOT / "docker" / "api.Dockerfile", "worker": ROOT / "docker" / "worker.Dockerfile"}
REQUIRED = {"postgres", "redis", "minio", "minio-init", "api", "worker", "flower"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|BASIC_AUTH|API_KEY", re.IGNORECASE)
REQUIRED_REF = re.compile(r"^\$\{(?P<name>[A-Z0-9_]+):\?[^}]*\}$")
# Profile-only services cannot use ${VAR:?}: compose resolves every service's variables, so the flower password
# would be demanded even without `--profile flower`. Flower's command refuses to start without it instead.
OPTIONAL_SECRETS = {("flower", "FLOWER_BASIC_AUTH")}
URL_CREDENTIALS = re.compile(r"://(?P<user>[^:/@\s]*):(?P<password>\$\{[^}]*\}|[^@\s]*)@")
VAR_DEFAULT = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _one_shot(services: dict) -> set[str]:
    """Services others wait on to *finish* (service_completed_successfully): init jobs, not daemons."""
    return {
        name
        for service in services.values()
        for name, dep in (service.get("depends_on") or {}).items()
        if isinstance(dep, dict) and dep.get("condition") == "service_completed_successfully"
    }


def test_the_file_parses_with_the_required_services(compose, services):
    assert set(services) >= REQUIRED, f"missing services: {REQUIRED - set(services)}"
    assert services["flower"].get("profiles") == ["flower"], "flower is optional: behind a profile"


def test_every_long_running_service_has_a_healthcheck(services):
    one_shot = _one_shot(services)
    assert one_shot == {"minio-init"}
    for name in one_shot:  # an init job exits: there is no process for a healthcheck to probe
        assert services[name].get("restart") == "no"
    for name, service in services.items():
        if name in one_shot:
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_dependencies_wait_for_health_not_for_start(services):
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, dep in depends.items():
            wanted = "service_completed_successfully" if target in _one_shot(services) else "service_healthy"
            assert dep.get("condition") == wanted, f"{name} -> {target}"
            assert "healthcheck" in services[target] or wanted != "service_healthy"
    assert {"postgres", "redis", "minio-init"} <= set(services["api"]["depends_on"])
    assert {"postgres", "redis", "minio-init", "api"} <= set(services["worker"]["depends_on"])


def test_data_lives_in_named_volumes(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source")
            assert source in declared, f"{name} mounts {source!r}, not a named volume"
    for stateful in ("postgres", "redis", "minio"):
        assert services[stateful].get("volumes"), f"{stateful} would lose its data with the container"


def test_no_secret_is_hard_coded(services):
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and (name, key) not in OPTIONAL_SECRETS:
                assert REQUIRED_REF.match(value), f"{name}.{key} must be a ${{VAR:?message}} reference, not {value!r}"
            for match in URL_CREDENTIALS.finditer(value):
                assert REQUIRED_REF.match(match["password"]), f"{name}.{key} has a literal password in a URL"
    text = COMPOSE.read_text()
    for match in URL_CREDENTIALS.finditer(text):
        assert REQUIRED_REF.match(match["password"]), f"literal password in {match.group(0)!r}"
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            assert not re.match(r"\s*(ENV|ARG)\b.*(PASSWORD|SECRET)", line, re.IGNORECASE), f"{path.name}: {line}"


def test_the_env_example_names_every_required_variable_without_a_value():
    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    text = "\n".join(line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#"))
    required = {m["name"] for m in re.finditer(r"\$\{(?P<name>[A-Z0-9_]+):\?", text)}
    assert required <= set(example), f".env.example lacks {required - set(example)}"
    for key, value in example.items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example must not carry a value for {key}"


def test_the_worker_reserves_a_gpu_and_reads_a_configurable_queue(services):
    worker = services["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert all("count" in d or "device_ids" in d for d in devices)
    command = worker["command"] if isinstance(worker["command"], list) else shlex.split(worker["command"])
    assert "--queues" in command and command[command.index("--queues") + 1].startswith("${WORKER_QUEUES")


# --- entry points -------------------------------------------------------------------------------------------------
def _commands_in(words: list[str]) -> list[list[str]]:
    """Every `lingudistill ...` invocation of an exec-form command, looking inside `sh -c SCRIPT`."""
    words = [VAR_DEFAULT.sub(lambda m: m.group(2) or "x", word) for word in words]
    if words[:2] == ["sh", "-c"]:
        lexer = shlex.shlex(words[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        found, current = [], []
        for token in [*lexer, ";"]:
            if token in ("&&", "||", ";", "|", "&"):
                found += _commands_in(current[1:] if current[:1] == ["exec"] else current)
                current = []
            else:
                current.append(token)
        return found
    return [words[1:]] if words[:1] == ["lingudistill"] else []


def _dockerfile_instruction(path: Path, name: str) -> list[str]:
    lines = [line for line in path.read_text().splitlines() if line.startswith(name + " ")]
    assert lines, f"{path.name} has no {name}"
    return json.loads(lines[-1][len(name) + 1 :])  # exec form: a JSON array


def _invocations(services: dict) -> list[list[str]]:
    invocations = []
    for path in DOCKERFILES.values():
        invocations += _commands_in(_dockerfile_instruction(path, "CMD"))
    for name in ("api", "worker"):
        command = services[name]["command"]
        invocations += _commands_in(shlex.split(command) if isinstance(command, str) else command)
    return invocations


def test_image_commands_exist_in_the_package(services):
    from lingudistill.cli import main

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["lingudistill"] == "lingudistill.cli:main"
    invocations = _invocations(services)
    assert {args[0] for args in invocations} >= {"serve", "worker", "db"}
    for args in invocations:
        command: click.Command = main
        words = list(args)
        while isinstance(command, click.Group):
            name = words.pop(0)
            found = command.get_command(click.Context(command), name)  # plugin commands load on demand
            assert found is not None, f"`lingudistill {' '.join(args)}`: no command {name!r}"
            command = found
        assert not (command.help or "").startswith("(unavailable"), f"`lingudistill {args[0]}`: {command.help}"
        command.make_context("lingudistill", words)  # raises on an option the command does not have


def test_dockerfiles_run_as_non_root_on_pinned_bases():
    pin = re.compile(r"^FROM\s+\S+:(?=[^\s]*\d+\.\d+)[^\s:]+(@sha256:[0-9a-f]{64})?(\s+AS\s+\S+)?$", re.IGNORECASE)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_pin = next(d for d in dependencies if d.startswith("torch=="))
    for name, path in DOCKERFILES.items():
        lines = path.read_text().splitlines()
        bases = [line for line in lines if line.startswith("FROM ")]
        assert bases and all(pin.match(b) and ":latest" not in b for b in bases), f"{name}: unpinned base {bases}"
        users = [line.split()[1] for line in lines if line.startswith("USER ")]
        assert users, f"{name} runs as root"
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{name}: USER {users[-1]} (a numeric non-zero uid)"
        text = path.read_text()
        assert '".[service]"' in text or " .[service]" in text, f"{name} does not install the project with [service]"
        assert torch_pin in text, f"{name} does not pin {torch_pin}"
    assert "cuda" in next(b for b in DOCKERFILES["worker"].read_text().splitlines() if b.startswith("FROM "))
    assert "slim" in next(b for b in DOCKERFILES["api"].read_text().splitlines() if b.startswith("FROM "))


def test_third_party_images_are_pinned(services):
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image} is not pinned"


def test_the_build_context_carries_what_the_images_copy():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for path in DOCKERFILES.values():
        for line in path.read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert source not in ignored and (ROOT / source).exists(), f"{path.name}: COPY {source}"


def _docker_compose() -> list[str] | None:
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        probe = subprocess.run([*candidate, "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return candidate
    return None


def test_docker_compose_config_accepts_the_file_and_refuses_missing_secrets(tmp_path):
    compose_cli = _docker_compose()
    if compose_cli is None:
        pytest.skip("no `docker compose` here (config needs the CLI plugin, not the engine)")
    env = tmp_path / ".env"  # the project directory is tmp_path: env_file [.env] resolves there
    secrets = ["POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"]
    env.write_text("\n".join(f"{name}=test-{name.lower()}" for name in secrets) + "\nLINGUDISTILL_SIGNING_SECRET=x\n")
    base = [*compose_cli, "--project-directory", str(tmp_path), "-f", str(COMPOSE), "--env-file", str(env)]
    ok = subprocess.run([*base, "config", "--quiet", "--no-env-resolution"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    env.write_text("\n".join(f"{name}=x" for name in secrets[1:]) + "\n")
    missing = subprocess.run([*base, "config", "--quiet"], capture_output=True, text=True)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
