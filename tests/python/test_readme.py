"""Every command block of the READMEs, run as a user would, against a gateway in front of the
mock: the run command, the curl examples, the Python and Node examples. Blocks this machine cannot
run are listed below with the reason; a block that is neither run nor listed fails the test."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, Process, start_mock

README_CLIENT_KEY = "choose-a-long-client-key"
README_ADMIN_PASSWORD = "your-admin-password"
NOT_RUNNABLE = {
    "./deploy.sh": "needs a Docker engine; deploy.sh is tested against a stand-in docker in test_packaging.py",
    "./scripts/test.sh": "the test command itself, which runs this test",
    "./scripts/fuzz.sh": "fuzzing runs for minutes on demand; not part of the tests",
    "-p bench": "the full benchmark pins both cores for minutes; CI runs its smoke",
}


def code_blocks(path):
    return re.findall(r"```(\w+)\n(.*?)```", path.read_text(), re.S)


def strip_comments(code):
    return "\n".join(line.split("#")[0].rstrip() for line in code.splitlines())


def test_both_readmes_hold_the_same_commands():
    english = [(lang, strip_comments(code)) for lang, code in code_blocks(REPO / "README.md")]
    chinese = [(lang, strip_comments(code)) for lang, code in code_blocks(REPO / "README_zh.md")]
    assert english == chinese


@pytest.fixture(scope="module")
def readme_gateway():
    """The README's own run command, with only the upstream, address and database pointed at the
    test's (and the dev profile instead of --release: the same binary, already built)."""
    blocks = [code for lang, code in code_blocks(REPO / "README.md") if lang == "sh" and "cargo run" in code and "-p gemini-pool" in code]
    assert len(blocks) == 1
    command = blocks[0].replace("\\\n", " ").replace("--release", "").strip()
    assert command.endswith("cargo run  -p gemini-pool")
    mock = start_mock("--accept-any-key")
    data = tempfile.mkdtemp(prefix="gemini-pool-readme-")
    env = dict(
        os.environ,
        GEMINI_BASE_URL=mock.url,
        LISTEN_ADDR="127.0.0.1:0",
        DATABASE_URL=f"sqlite://{data}/readme.db?mode=rwc",
        ADMIN_PASSWORD=README_ADMIN_PASSWORD,
        DEFAULT_RPM_LIMIT="1000",
        CARGO_TERM_QUIET="true",
    )
    try:
        # `exec env …` so that stopping the process stops the gateway (cargo run replaces itself).
        # `cargo run` may first rebuild the binary for its own feature set: more time than a start.
        gateway = Process(["bash", "-c", f"exec env {command}"], env=env, cwd=REPO, start_within=300)
        yield gateway
        gateway.stop()
    finally:
        mock.stop()


def runnable_blocks():
    seen = set()
    for readme in ("README.md", "README_zh.md"):
        for lang, code in code_blocks(REPO / readme):
            key = (lang, strip_comments(code))
            if lang in ("sh", "python", "js") and key not in seen:
                seen.add(key)
                yield pytest.param(lang, code, id=f"{readme}:{lang}:{code.strip().splitlines()[0][:40]}")


@pytest.mark.parametrize("lang,code", list(runnable_blocks()))
def test_readme_block_runs(lang, code, readme_gateway, tmp_path):
    for marker, reason in NOT_RUNNABLE.items():
        if marker in code:
            pytest.skip(f"not run here: {reason}")
    if "cargo run" in code:
        assert readme_gateway.url  # started by the fixture, from this very block
        return
    code = code.replace("http://localhost:8080", readme_gateway.url)
    if lang == "sh":
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert '"error"' not in result.stdout, result.stdout
        assert result.stdout.strip(), "the example printed nothing"
    elif lang == "python":
        (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n% a small test document\n")
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "Echo:" in result.stdout or "Tool results" in result.stdout, result.stdout
    elif lang == "js":
        # Examples of the Vercel AI SDK run beside its pinned install; the others beside the
        # openai package of the browser tests.
        folder = "clients-node" if '"ai"' in code or "@ai-sdk/" in code else "browser"
        script = REPO / "tests" / folder / f"readme-example-{os.getpid()}.mjs"
        script.write_text(code)
        try:
            result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
        finally:
            script.unlink()
        assert result.returncode == 0, result.stderr
        assert "Echo: Hello" in result.stdout, result.stdout
