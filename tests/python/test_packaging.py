"""Packaging: the Dockerfile's invariants and lint, deploy.sh (against a stand-in for docker),
shellcheck, the command line, and .env.example."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

from conftest import BIN_DIR, REPO, start_gateway, start_mock

GATEWAY = str(BIN_DIR / "gemini-pool")


def test_dockerfile_invariants():
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2 and stages[0][1] == "build", "multi-stage, with a build stage"
    final = text[text.rindex("\nFROM "):]
    assert "COPY --from=build" in final
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1] not in ("root", "0"), "the runtime does not run as root"
    assert re.search(r"^HEALTHCHECK .*\n?.*healthcheck", final, re.M), "a health check"
    assert re.search(r'^VOLUME \["/data"\]', final, re.M)
    assert re.search(r"^EXPOSE 8080", final, re.M)
    assert "ca-certificates" in final
    assert "--locked" in text and "cargo build --release" in text
    dockerignore = (REPO / ".dockerignore").read_text().split()
    assert "target" in dockerignore and ".env" in dockerignore


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shell_scripts_pass_shellcheck():
    assert shutil.which("shellcheck"), "shellcheck is installed by scripts/test.sh"
    scripts = [REPO / "deploy.sh", REPO / "scripts" / "test.sh", REPO / "scripts" / "fuzz.sh", REPO / ".ci" / "run"]
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


FAKE_DOCKER = """#!/usr/bin/env bash
# Records every call; answers like a docker whose container starts and becomes ready.
echo "$*" >> "$DOCKER_LOG"
case "$1" in
  container) [ -f "$DOCKER_STATE" ] ;;
  run) touch "$DOCKER_STATE"; echo container-id ;;
  rm) rm -f "$DOCKER_STATE" ;;
  inspect) echo running ;;
  *) exit 0 ;;
esac
"""


def run_deploy(workdir, *args, path=None):
    env = dict(os.environ, DOCKER_LOG=str(workdir / "docker.log"), DOCKER_STATE=str(workdir / "container"))
    env["PATH"] = path if path is not None else f"{workdir / 'bin'}:{os.environ['PATH']}"
    return subprocess.run(["bash", str(workdir / "deploy.sh"), *args], cwd=workdir, env=env, capture_output=True, text=True)


def test_deploy_creates_env_builds_runs_waits_and_is_idempotent(tmp_path):
    for name in ("deploy.sh", ".env.example", "Dockerfile"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "bin").mkdir()
    docker = tmp_path / "bin" / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)

    first = run_deploy(tmp_path, "9000")
    assert first.returncode == 0, first.stdout + first.stderr
    env = (tmp_path / ".env").read_text()
    password = re.search(r"^ADMIN_PASSWORD=(\S+)$", env, re.M).group(1)
    secret = re.search(r"^JWT_SECRET=(\S+)$", env, re.M).group(1)
    assert len(password) == 20 and len(secret) == 64
    assert password in first.stdout, "the generated password is shown to the user"
    assert oct((tmp_path / ".env").stat().st_mode)[-3:] == "600"
    assert "http://localhost:9000/" in first.stdout and "docker logs -f gemini-pool" in first.stdout
    calls = (tmp_path / "docker.log").read_text().splitlines()
    run = next(c for c in calls if c.startswith("run "))
    assert "-p 9000:8080" in run and "-v gemini-pool-data:/data" in run and "--env-file .env" in run
    assert any(c.startswith("build -t gemini-pool:latest") for c in calls)
    assert any("healthcheck --ready" in c for c in calls), "it waits for readiness"

    # Again: .env is kept, the old container is replaced, the volume stays.
    second = run_deploy(tmp_path)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / ".env").read_text() == env
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert any(c.startswith("rm -f gemini-pool") for c in calls)
    assert not any(c.startswith("volume rm") for c in calls)
    assert "-p 8080:8080" in [c for c in calls if c.startswith("run ")][-1]


def test_deploy_explains_missing_docker_and_bad_ports(tmp_path):
    shutil.copy(REPO / "deploy.sh", tmp_path / "deploy.sh")
    no_docker = run_deploy(tmp_path, path="/usr/bin:/bin")
    assert no_docker.returncode == 1 and "Docker is required" in no_docker.stderr
    bad_port = run_deploy(tmp_path, "70000")
    assert bad_port.returncode == 2 and "usage" in bad_port.stderr


def test_help_lists_every_variable_of_the_example():
    help_text = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True, check=True).stdout
    example = (REPO / ".env.example").read_text()
    variables = set(re.findall(r"^#?\s*([A-Z_]+)=", example, re.M))
    assert len(variables) == 15
    for variable in variables:
        assert variable in help_text


def test_check_config_reports_and_refuses(tmp_path):
    env = {"PATH": os.environ["PATH"], "GEMINI_API_KEYS": "AIzaSySecretKeyForCheck000000000000000@proj"}
    ok = subprocess.run([GATEWAY, "check-config"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "upstream keys:    1 (1 named projects)" in ok.stdout
    assert "SecretKeyForCheck" not in ok.stdout
    bad = subprocess.run([GATEWAY, "check-config"], cwd=tmp_path, env={**env, "MAX_RETRIES": "lots"}, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("gemini-pool: MAX_RETRIES:")


def test_a_hashed_admin_password_works_for_login():
    hashed = subprocess.run([GATEWAY, "hash-password"], input="s3cret-passphrase\n", capture_output=True, text=True, check=True).stdout.strip()
    assert hashed.startswith("$argon2id$")
    mock = start_mock()
    try:
        gateway = start_gateway(mock, "k1", ADMIN_PASSWORD=hashed)
    except Exception:
        mock.stop()
        raise
    try:
        request = urllib.request.Request(
            f"{gateway.url}/api/auth/login",
            data=json.dumps({"username": "admin", "password": "s3cret-passphrase"}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200 and "token" in json.load(response)
        alive = subprocess.run([GATEWAY, "healthcheck"], env={"PATH": os.environ["PATH"], "LISTEN_ADDR": f"127.0.0.1:{gateway.url.rsplit(':', 1)[1]}"}, capture_output=True, text=True)
        assert alive.returncode == 0, alive.stderr
    finally:
        gateway.stop()
        mock.stop()
