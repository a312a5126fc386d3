"""Starts the real `mock-gemini` and `gemini-pool` binaries on port 0 for the SDK tests.

The binaries come from GEMINI_POOL_BIN_DIR (default: target/debug of this repository), which
scripts/test.sh builds first.
"""

import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("GEMINI_POOL_BIN_DIR", REPO / "target" / "debug"))
CLIENT_KEY = "sdk-test-client-key"
# Two keys in two projects: a file uploaded through one must be used through that project only.
UPSTREAM_KEYS = "AIzaSyMockKeyA000000000000000000000000@project-a,AIzaSyMockKeyB000000000000000000000000@project-b"
LISTENING = re.compile(r"listening on (http://\S+)")


class Process:
    """A child process whose standard output is read until it announces its address."""

    def __init__(self, args, env=None, cwd=None, start_within=30):
        self.lines = []
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url = None
        ready = threading.Event()

        def read():
            for line in self.proc.stdout:
                self.lines.append(line)
                match = LISTENING.search(line)
                if match and self.url is None:
                    self.url = match.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(start_within) or self.url is None:
            self.stop()
            raise RuntimeError(f"{args[0]} did not start:\n{''.join(self.lines)}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_mock(*args):
    return Process([str(BIN_DIR / "mock-gemini"), *args])


def start_gateway(mock, upstream_keys, **extra_env):
    data = tempfile.mkdtemp(prefix="gemini-pool-sdk-")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "LISTEN_ADDR": "127.0.0.1:0",
        "DATABASE_URL": f"sqlite://{data}/gateway.db?mode=rwc",
        "GEMINI_API_KEYS": upstream_keys,
        "GEMINI_BASE_URL": mock.url,
        "CLIENT_API_KEYS": CLIENT_KEY,
        "RUST_LOG": "info",
        # The SDK tests are not about quotas: the default 10 per minute would get in the way.
        "DEFAULT_RPM_LIMIT": "100000",
        "DEFAULT_RPD_LIMIT": "1000000",
        **extra_env,
    }
    return Process([str(BIN_DIR / "gemini-pool")], env=env, cwd=data)


def assert_log_has_no_secrets(process, upstream_keys):
    log = "".join(process.lines)
    # Secrets never reach the log: neither the client key nor a whole upstream key.
    assert CLIENT_KEY not in log
    for key in upstream_keys.split(","):
        assert key.split("@")[0] not in log


@pytest.fixture(scope="session")
def mock_gemini():
    process = start_mock("--keys", UPSTREAM_KEYS)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def gateway(mock_gemini):
    process = start_gateway(mock_gemini, UPSTREAM_KEYS)
    yield process
    process.stop()
    assert_log_has_no_secrets(process, UPSTREAM_KEYS)
