"""Packaging: the Dockerfile's invariants and lint, its build stages replayed without Docker,
docker-compose.yml and the systemd unit against it, deploy.sh (against a stand-in for docker),
shellcheck, the command line, and .env.example."""

import json
import os
import re
import shlex
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
    assert len(stages) >= 2 and "build" in [name for _, name in stages[:-1]], "multi-stage, with a build stage"
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


# The Dockerfile's build stages, replayed without Docker.
#
# CI has no Docker engine, and a broken image build (a workspace member the dependency stage does
# not copy, a directory the compiler reads but the build stage lacks) shows only when someone runs
# `docker build`. So the test below interprets the Dockerfile itself: the instructions of every
# stage the final stage copies from, each stage in a scratch directory of its own, with the build
# context read as Docker reads it (.dockerignore applied).
# How paths are mapped: replay_build_stages.
#
# Tools: RUN lines really run, with the stage's SHELL, in its working directory, with two
# stand-ins first on PATH (both log their calls):
# - `cargo build` first runs `cargo metadata --locked --offline` (the workspace loads and the lock
#   file matches its manifests), then the same build with --offline (the crates the suite's own
#   build fetched: the replay needs no network) and CARGO_TARGET_DIR set to the suite's target
#   directory, so the dependencies are compiled once for CI rather than per replay; what it made
#   of the workspace's own crates is removed afterwards (forget_replayed_builds). Other cargo
#   commands run as they are.
# - `strip` checks that its file exists (target/ read as that shared directory) and changes
#   nothing: the shared release binary is not rewritten behind cargo's back.

CARGO_STAND_IN = """\
import json, os, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
cwd = Path.cwd()
# The manifests present when cargo starts: the test checks that every member's is there.
manifests = sorted(
    path.relative_to(cwd).as_posix() for path in cwd.rglob("Cargo.toml") if "target" not in path.relative_to(cwd).parts
)
with open(os.environ["REPLAY_LOG"], "a") as log:
    log.write(json.dumps({"tool": "cargo", "stage": os.environ["REPLAY_STAGE"], "cwd": str(cwd), "args": args, "manifests": manifests}) + "\\n")
cargo = os.environ["REPLAY_CARGO"]
if args[:1] == ["build"]:
    # The build shares the suite's target directory: a build into target/debug (profiles dev and
    # test) would replace the binaries the other tests run.
    profiles = [arg.partition("=")[2] or args[i + 1] for i, arg in enumerate(args) if arg.startswith("--profile")]
    profile = "release" if {"--release", "-r"} & set(args) else (profiles or ["dev"])[0]
    if profile in ("dev", "test"):
        sys.exit(f"replay: not replaying a build in the {profile} profile (the image should be built in release)")
    # Filtered to this machine's platform: CI has fetched only the crates this platform builds.
    host = next(line.split()[1] for line in subprocess.run(["rustc", "-vV"], capture_output=True, text=True).stdout.splitlines() if line.startswith("host:"))
    metadata = [cargo, "metadata", "--locked", "--offline", "--format-version", "1", "--filter-platform", host]
    loads = subprocess.run(metadata, stdout=subprocess.DEVNULL)
    if loads.returncode != 0:
        sys.exit(loads.returncode)
    args = [*args, "--offline"]
os.execv(cargo, [cargo, *args])
"""

STRIP_STAND_IN = """\
import json, os, sys
from pathlib import Path

with open(os.environ["REPLAY_LOG"], "a") as log:
    log.write(json.dumps({"tool": "strip", "stage": os.environ["REPLAY_STAGE"], "cwd": os.getcwd(), "args": sys.argv[1:]}) + "\\n")
for name in (arg for arg in sys.argv[1:] if not arg.startswith("-")):
    path = Path(name)
    if path.parts[:1] == ("target",):
        path = Path(os.environ["CARGO_TARGET_DIR"], *path.parts[1:])
    if not path.is_file():
        sys.exit(f"strip: {name}: no such file ({path})")
"""


DOCKERFILE_KEYWORDS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER",
    "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


def dockerfile_instructions(text):
    """The Dockerfile as (INSTRUCTION, arguments) pairs: `\\`-continued lines joined, comment lines
    dropped (also inside a continued instruction, as Docker drops them). Heredocs (`RUN <<EOF`) are
    not understood: their lines fail as unknown instructions rather than being skipped."""
    instructions, pending = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and pending is None):
            continue
        continued = line.rstrip().endswith("\\")
        part = line.rstrip()[:-1] if continued else line
        pending = part if pending is None else pending + part
        if not continued:
            keyword, _, arguments = pending.strip().partition(" ")
            assert keyword.upper() in DOCKERFILE_KEYWORDS, f"not a Dockerfile instruction: {pending.strip()[:80]}"
            instructions.append((keyword.upper(), arguments.strip()))
            pending = None
    return instructions


def dockerfile_stages(text):
    """The stages in order, as {"name", "index", "base", "instructions"}; a stage without AS is
    named by its index, as `COPY --from=0` names it."""
    stages = []
    for keyword, arguments in dockerfile_instructions(text):
        if keyword == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "index": len(stages), "base": words[0], "instructions": []})
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1]["instructions"].append((keyword, arguments))
    return stages


def copy_arguments(arguments):
    """COPY's flags (--from=…, …), sources and destination, in the shell or the JSON form."""
    words = arguments.split()
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    rest = " ".join(words)
    paths = json.loads(rest) if rest.startswith("[") else rest.split()
    return flags, paths[:-1], paths[-1]


def env_pairs(arguments):
    """ENV's and ARG's `name=value` pairs (the legacy `ENV name value` form as well)."""
    words = shlex.split(arguments)
    if words and "=" not in words[0] and len(words) > 1:
        return [(words[0], " ".join(words[1:]))]
    return [(word.partition("=")[0], word.partition("=")[2]) for word in words]


class DockerIgnore:
    """The build context's filter with Docker's semantics (moby's patternmatcher): patterns are
    cleaned and relative to the context root; `*` and `?` stay within one path component and `**`
    spans any number of them; a pattern matching a directory excludes everything under it; `!`
    re-includes; the last matching pattern decides."""

    def __init__(self, text):
        self.patterns = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if exclusion else line).lstrip("/")
            self.patterns.append((re.compile(self.regex(pattern)), exclusion))

    @staticmethod
    def regex(pattern):
        out, i = "^", 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    i += 1
                out += ".*" if i >= len(pattern) else "(.*/)?"
                continue
            char = pattern[i]
            if char == "*":
                out += "[^/]*"
            elif char == "?":
                out += "[^/]"
            elif char == "[":
                end = pattern.index("]", i + 1)
                body = pattern[i + 1:end]
                out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
                i = end
            elif char == "\\" and i + 1 < len(pattern):
                i += 1
                out += re.escape(pattern[i])
            else:
                out += re.escape(char)
            i += 1
        return out + "$"

    def ignores(self, relative):
        """Whether the context leaves out this path (relative to the context root, `/`-separated)."""
        parts = relative.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        ignored = False
        for regex, exclusion in self.patterns:
            if any(regex.match(candidate) for candidate in candidates):
                ignored = not exclusion
        return ignored


def test_dockerignore_semantics():
    """The replay's context filter agrees with Docker's on the kinds of pattern .dockerignore uses."""
    ignore = DockerIgnore("target\n**/__pycache__\ntests/browser/node_modules\n# a comment\n/.env\n")
    assert ignore.ignores("target") and ignore.ignores("target/release/gemini-pool")
    assert not ignore.ignores("crates/server/target"), "a bare name is anchored at the context root"
    assert ignore.ignores("__pycache__/x.pyc") and ignore.ignores("tests/python/__pycache__/conftest.pyc")
    assert ignore.ignores("tests/browser/node_modules/a/b.js") and not ignore.ignores("tests/browser/app.test.js")
    assert ignore.ignores(".env") and not ignore.ignores(".env.example")
    assert DockerIgnore("*.md\n").ignores("README.md") and not DockerIgnore("*.md\n").ignores("docs/x.md")
    assert not DockerIgnore("*.md\n!README.md\n").ignores("README.md")
    assert DockerIgnore("docs/[a-c]?.txt\n").ignores("docs/b1.txt") and not DockerIgnore("docs/[!a-c]?.txt\n").ignores("docs/b1.txt")


def copy_into(source, destination, context_ignore=None):
    """Docker's COPY of one source: a directory's contents (not the directory itself), or a file.
    Modification times are kept, as Docker keeps them (the Dockerfile's touch step is about them).
    With context_ignore, the source is in the build context and ignored paths are left out."""
    if source.is_dir() and not source.is_symlink():
        destination.mkdir(parents=True, exist_ok=True)
        for entry in sorted(source.iterdir()):
            if not (context_ignore and context_ignore.ignores(entry.relative_to(REPO).as_posix())):
                copy_into(entry, destination / entry.name, context_ignore)
    else:
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)


def context_matches(source, context_ignore):
    """The build-context paths a COPY source names (wildcards expanded), minus ignored ones."""
    source = os.path.normpath(source).lstrip("/")
    paths = sorted(REPO.glob(source)) if any(c in source for c in "*?[") else [REPO / source]
    return [p for p in paths if p.exists() and (p == REPO or not context_ignore.ignores(p.relative_to(REPO).as_posix()))]


def shared_target_dir():
    """The target directory of the rest of the suite (scripts/test.sh's cargo commands)."""
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target")).resolve()


def replay_build_stages(dockerfile_text, scratch):
    """Replays every stage the final stage copies from, directly or not, in the Dockerfile's order.
    Returns the replayed stages (each with its scratch "root"), the stand-ins' calls, and the first
    failure as a message (None when every instruction succeeded).

    Paths: a stage's file system is its own scratch directory, so the image's /src is
    <scratch>/stage/<name>/src. WORKDIR and COPY are interpreted here and map their paths directly.
    RUN lines are shell text, so they are rewritten: the top-level directories the Dockerfile
    itself makes (the first components of WORKDIR paths, COPY destinations and COPY --from sources:
    /src and /skeleton today), and any other top-level directory a RUN line names that the test
    machine does not have, are prefixed with the scratch directory where they appear as paths (not
    inside a longer word or path). So a replay never makes a directory at the host's root. Every
    other absolute path is the base image's (/bin/bash, /tmp, coreutils), which the test machine
    has at the same place; base images are not fetched, as the build stages use only the Rust
    toolchain, which CI has. A chroot or a mount namespace would map paths without rewriting, but
    needs privileges or tools (unshare, proot) that CI machines do not all have."""
    stages = dockerfile_stages(dockerfile_text)
    by_name = {stage["name"]: stage for stage in stages} | {str(stage["index"]): stage for stage in stages}

    def depends_on(stage):
        """The stages a stage copies from or is based on (image names are not stages)."""
        copies = [copy_arguments(arguments)[0] for keyword, arguments in stage["instructions"] if keyword == "COPY"]
        names = [flags["from"] for flags in copies if "from" in flags] + [stage["base"]]
        return [by_name[name] for name in names if name in by_name and by_name[name]["index"] < stage["index"]]

    needed, pending = set(), depends_on(stages[-1])
    while pending:
        stage = pending.pop()
        if stage["index"] not in needed:
            needed.add(stage["index"])
            pending += depends_on(stage)
    replayed = [stage for stage in stages if stage["index"] in needed]

    # The top-level directories rewritten in RUN lines (see above): those the replayed stages make
    # (WORKDIR, COPY destinations), those other stages take from them (COPY --from sources), and
    # those RUN lines name that the host does not have.
    roots = set()
    for stage in stages:
        for keyword, arguments in stage["instructions"]:
            paths = [arguments] if keyword == "WORKDIR" and stage in replayed else []
            if keyword == "COPY":
                flags, sources, destination = copy_arguments(arguments)
                paths = ([destination] if stage in replayed else []) + (sources if "from" in flags else [])
            roots |= {path.split("/")[1] for path in paths if path.startswith("/") and len(path) > 1}
            if keyword == "RUN" and stage in replayed:
                named = re.findall(r"(?<![\w.$/-])/([\w.-]+)", arguments)
                roots |= {name for name in named if not (Path("/") / name).exists()}
    own_paths = re.compile(r"(?<![\w.$/-])/(?:%s)(?=/|$|[^\w.-])" % "|".join(map(re.escape, sorted(roots))))

    tools = scratch / "tools"
    tools.mkdir()
    for name, program in (("cargo", CARGO_STAND_IN), ("strip", STRIP_STAND_IN)):
        (tools / name).write_text(f"#!{sys.executable}\n{program}")
        (tools / name).chmod(0o755)
    log = scratch / "tools.log"
    log.touch()
    context_ignore = DockerIgnore((REPO / ".dockerignore").read_text())

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()]

    for stage in replayed:
        root = (scratch / "stage" / stage["name"]).resolve()
        assert re.fullmatch(r"[\w/.-]+", str(root)), f"{root}: RUN lines are rewritten to it, so no shell metacharacters"
        base = by_name.get(stage["base"])
        if base is not None and "root" in base:  # FROM an earlier stage: its files and settings
            shutil.copytree(base["root"], root, symlinks=True)
            workdir, shell, env = base["state"]
            env = dict(env, REPLAY_STAGE=stage["name"])
        else:
            root.mkdir(parents=True)
            workdir, shell = "/", ["/bin/sh", "-c"]  # Docker's defaults (the Rust image sets no WORKDIR)
            env = dict(
                os.environ,
                PATH=f"{tools}:{os.environ['PATH']}",
                REPLAY_LOG=str(log),
                REPLAY_STAGE=stage["name"],
                REPLAY_CARGO=shutil.which("cargo"),
                CARGO_TARGET_DIR=str(shared_target_dir()),
            )
        stage["root"] = root
        for keyword, arguments in stage["instructions"]:
            where = f"stage {stage['name']}: {keyword} {arguments}"
            if keyword == "WORKDIR":
                workdir = os.path.normpath(os.path.join(workdir, arguments))
                (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
            elif keyword == "SHELL":
                shell = json.loads(arguments)
            elif keyword in ("ENV", "ARG"):
                for name, value in env_pairs(arguments):
                    env[name] = value if keyword == "ENV" or value else env.get(name, "")
            elif keyword == "COPY":
                flags, sources, destination = copy_arguments(arguments)
                target = root / os.path.join(workdir, destination).lstrip("/")
                into_directory = destination.endswith("/") or len(sources) > 1 or target.is_dir()
                if "from" in flags and "root" not in by_name.get(flags["from"], {}):
                    return replayed, calls(), f"{where}: only the Dockerfile's own stages are replayed, not images"
                for source in sources:
                    if "from" in flags:
                        origin = by_name[flags["from"]]["root"] / source.lstrip("/")
                        matches, ignore = [origin] if origin.exists() else [], None
                    else:
                        matches, ignore = context_matches(source, context_ignore), context_ignore
                    if not matches:
                        return replayed, calls(), f"{where}: {source} not found"
                    for match in matches:
                        copy_into(match, target / match.name if into_directory and not match.is_dir() else target, ignore)
            elif keyword == "RUN":
                if arguments.startswith("--"):
                    # --mount=type=cache and the like change what ends up in the layer.
                    return replayed, calls(), f"{where}: RUN flags are not replayed; teach the replay what they mean"
                command = own_paths.sub(lambda m: f"{root}{m.group(0)}", arguments) if roots else arguments
                argv = [*shell, command] if not command.startswith("[") else json.loads(command)
                result = subprocess.run(argv, cwd=root / workdir.lstrip("/"), env=env, capture_output=True, text=True)
                if result.returncode != 0:
                    return replayed, calls(), f"{where}\nexited with {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            elif keyword in ("ADD", "ONBUILD"):
                return replayed, calls(), f"{where}: not replayed (use COPY)"
            # The others (LABEL, EXPOSE, USER, …) do not change what a build stage produces.
        stage["state"] = (workdir, shell, env)
    return replayed, calls(), None


def workspace_packages():
    """The workspace's members as cargo reads them (`cargo metadata --no-deps`)."""
    metadata = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"], cwd=REPO, capture_output=True, text=True, check=True
    )
    metadata = json.loads(metadata.stdout)
    return Path(metadata["workspace_root"]), metadata["packages"]


def build_profile(args):
    """The profile of a `cargo build` command line."""
    for i, arg in enumerate(args):
        if arg in ("--release", "-r"):
            return "release"
        if arg.startswith("--profile"):
            return arg.partition("=")[2] or args[i + 1]
    return "dev"


def build_packages(args):
    """The packages a `cargo build` command line names (-p/--package)."""
    packages = []
    for i, arg in enumerate(args):
        if arg in ("-p", "--package"):
            packages.append(args[i + 1])
        elif arg.startswith("--package="):
            packages.append(arg.partition("=")[2])
        elif arg.startswith("-p") and len(arg) > 2:
            packages.append(arg[2:])
    return packages


def forget_replayed_builds(log):
    """Removes from the shared target directory what the replayed builds made of the workspace's
    own crates; the dependencies stay (sharing them is the point). Cargo records a crate's sources
    relative to its package, so a later build in the repository takes the replay's artifacts for
    its own as long as the repository's files are older: after a replay stopped between the stub
    build and the real one, `cargo build --release` in the repository would keep the stub binary."""
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    builds = [call["args"] for call in calls if call["tool"] == "cargo" and call["args"][:1] == ["build"]]
    if not builds:
        return
    _, packages = workspace_packages()
    by_name = {package["name"]: package for package in packages}
    built, pending = set(), []
    for args in builds:
        chosen = build_packages(args)
        # Without -p, or with --workspace, a virtual workspace builds all its members.
        pending += list(by_name) if not chosen or "--workspace" in args else chosen
    while pending:
        name = pending.pop()
        if name in by_name and name not in built:
            built.add(name)
            pending += [dependency["name"] for dependency in by_name[name]["dependencies"] if dependency.get("path")]
    for profile in {build_profile(args) for args in builds} - {"dev", "test"}:  # never built: see CARGO_STAND_IN
        clean = ["cargo", "clean", "--offline", "--profile", profile, *(f"--package={name}" for name in sorted(built))]
        subprocess.run(clean, cwd=REPO, env=dict(os.environ, CARGO_TARGET_DIR=str(shared_target_dir())), capture_output=True, check=True)


def test_dockerfile_build_stages_replay_without_docker(tmp_path):
    """The image's build as Docker runs it, without Docker: every member's manifest is in place
    before cargo first runs in a stage, the dependency build and the real build succeed (--locked,
    offline), and what the runtime stage copies out is there, the real gateway. Costs about one
    release build of the gateway (two minutes on two cores; the first run of a fresh CI also builds
    the release dependencies, which the benchmark smoke then finds built)."""
    dockerfile = (REPO / "Dockerfile").read_text()
    try:
        replayed, calls, failure = replay_build_stages(dockerfile, tmp_path)

        root, packages = workspace_packages()
        members = sorted(Path(package["manifest_path"]).relative_to(root).as_posix() for package in packages)
        assert "crates/server/Cargo.toml" in members and len(members) >= 5
        for stage in replayed:
            first = next((call for call in calls if call["tool"] == "cargo" and call["stage"] == stage["name"]), None)
            if first is not None:
                missing = sorted(set(members) - set(first["manifests"]))
                assert not missing, f"stage {stage['name']}: `cargo {' '.join(first['args'])}` runs without the manifests {missing}"
        assert failure is None, failure
        builds = [call for call in calls if call["tool"] == "cargo" and call["args"][:1] == ["build"]]
        assert builds and all("--locked" in call["args"] for call in builds), "the image is built from the lock file"

        # What the runtime stage takes from the build stages exists. Cargo's output is in the
        # shared target directory, so /<workspace>/target/… is read there. The binary must be the
        # gateway itself: were the sources not touched after the stub build, cargo would keep the
        # stub (it compares modification times).
        for keyword, arguments in dockerfile_stages(dockerfile)[-1]["instructions"]:
            flags, sources, _ = copy_arguments(arguments) if keyword == "COPY" else ({}, [], "")
            if "from" not in flags:
                continue
            stage = next((stage for stage in replayed if flags["from"] in (stage["name"], str(stage["index"]))), None)
            if stage is None:
                continue  # from an image, not from a build stage
            workspace = "/" + Path(builds[-1]["cwd"]).relative_to(stage["root"]).as_posix()
            for source in sources:
                inside = Path(os.path.relpath(source, workspace)).parts
                on_host = shared_target_dir().joinpath(*inside[1:]) if inside[0] == "target" else stage["root"] / source.lstrip("/")
                assert on_host.exists(), f"COPY --from={flags['from']} {source}: the build stages do not make it ({on_host})"
                if on_host.name == "gemini-pool":
                    version = subprocess.run([str(on_host), "--version"], capture_output=True, text=True, timeout=30)
                    assert version.stdout.startswith("gemini-pool "), f"not the gateway: {version.stdout!r} {version.stderr!r}"
    finally:
        forget_replayed_builds(tmp_path / "tools.log")


def compose_yaml(text):
    """The YAML docker-compose.yml is written in: mappings nested by indentation, `key: value`
    scalars (quotes removed), lists of scalars, comments. (PyYAML is not among the test's
    requirements, and this file needs no more.)"""
    lines = [line.split(" #")[0].rstrip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    root = {}
    stack = [(-1, root)]
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        container, item = stack[-1][1], line.strip()
        if item.startswith("- "):
            container.append(item[2:].strip().strip("'\""))
            continue
        key, _, value = item.partition(":")
        if value.strip():
            container[key] = value.strip().strip("'\"")
        else:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            deeper = len(following) - len(following.lstrip()) > indent
            container[key] = [] if deeper and following.strip().startswith("- ") else {}
            stack.append((indent, container[key]))
    return root


def final_stage_env():
    """The runtime stage's ENV, as name -> value."""
    instructions = dockerfile_stages((REPO / "Dockerfile").read_text())[-1]["instructions"]
    return dict(pair for keyword, arguments in instructions if keyword == "ENV" for pair in env_pairs(arguments))


def test_compose_builds_this_dockerfile_with_its_data_volume():
    """docker-compose.yml and deploy.sh are two ways to the same container: the image built from
    this Dockerfile (context `.`, no other Dockerfile), the same name, the settings the image sets,
    its data in the same named volume at the image's VOLUME, the port the image exposes."""
    compose = compose_yaml((REPO / "docker-compose.yml").read_text())
    service = compose["services"]["gemini-pool"]
    build = service["build"]
    assert build == "." or (build.get("context") == "." and build.get("dockerfile", "Dockerfile") == "Dockerfile"), build
    deploy = (REPO / "deploy.sh").read_text()
    variables = dict(re.findall(r'^([A-Z]+)="([^"]*)"$', deploy, re.M))
    assert service["image"] == variables["IMAGE"], "compose and deploy.sh build the same image"
    assert service["env_file"] == ".env", "the settings deploy.sh writes (from .env.example)"

    dockerfile = (REPO / "Dockerfile").read_text()
    image_env = final_stage_env()
    for name in ("LISTEN_ADDR", "DATABASE_URL"):
        assert service["environment"][name] == image_env[name], f"{name}: compose and the image agree"
        assert f"{name}={image_env[name]}" in deploy, f"{name}: deploy.sh and the image agree"

    volume_root = json.loads(re.search(r"^VOLUME (\[.*\])$", dockerfile, re.M).group(1))[0]
    database = re.fullmatch(r"sqlite://(/[^?]+)(\?.*)?", image_env["DATABASE_URL"]).group(1)
    assert Path(database).parent == Path(volume_root), "the database lives in the image's volume"
    mounts = [volume.split(":") for volume in service["volumes"]]
    assert [volume_root] == [target for _, target in mounts], "one volume, mounted at the image's VOLUME"
    assert mounts[0][0] == variables["VOLUME"] and mounts[0][0] in compose["volumes"], "the named volume deploy.sh uses"

    exposed = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M).group(1)
    assert image_env["LISTEN_ADDR"].rsplit(":", 1)[1] == exposed
    assert [port.rsplit(":", 1)[1] for port in service["ports"]] == [exposed]


def test_systemd_unit_paths_agree_with_its_install_steps():
    """deploy/gemini-pool.service: its install comment and its settings name the same user,
    directories and files, so following the comment gives a unit that starts and can write its
    database (ProtectSystem=strict makes everything else read-only)."""
    unit_path = REPO / "deploy" / "gemini-pool.service"
    text = unit_path.read_text()
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    commands = []  # the install comment's commands, without their sudo
    for line in text.splitlines():
        if line.startswith("#") and "sudo " in line:
            for command in line.lstrip("# ").split("&&"):
                words = shlex.split(command)
                commands.append(words[1:] if words[:1] == ["sudo"] else words)

    def step(program):
        found = [args for args in commands if args[0] == program]
        assert found, f"the install comment has a {program} step"
        return found

    useradd = step("useradd")[0]
    user, home = useradd[-1], useradd[useradd.index("--home-dir") + 1]
    assert settings["User"] == [user]
    workdir = settings["WorkingDirectory"][0]
    assert workdir == home, "the service runs in the user's home, which useradd creates"
    assert workdir in " ".join(settings["ReadWritePaths"]).split(), "the working directory is writable"
    database = next(value.partition("=")[2] for value in settings["Environment"] if value.startswith("DATABASE_URL="))
    database_file = re.fullmatch(r"sqlite://(/[^?]+)(\?.*)?", database).group(1)
    assert Path(database_file).parent == Path(workdir), "the database is in the writable working directory"

    installs = {args[-1]: args for args in step("install")}
    binary = next(dest for dest, args in installs.items() if "target/release/gemini-pool" in args)
    installed = binary + "gemini-pool" if binary.endswith("/") else binary
    assert settings["ExecStart"][0].split()[0] == installed, "ExecStart runs the binary the comment installs"
    env_file = next(dest for dest, args in installs.items() if ".env" in args)
    assert settings["EnvironmentFile"] == [env_file], "the environment file is the one the comment installs"
    assert installs[env_file][installs[env_file].index("-o") + 1] == user, "readable by the service's user"

    copy = step("cp")[0]
    assert copy[1:] == [f"deploy/{unit_path.name}", "/etc/systemd/system/"]
    enable = step("systemctl")[0]
    assert enable[-1] == unit_path.stem, "the enabled unit is this file"


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


def configuration_table():
    """The configuration variables as `--help` prints them from the code's one table
    (config::VARIABLES): name -> default ("" for none)."""
    help_text = subprocess.run([GATEWAY, "--help"], capture_output=True, text=True, check=True).stdout
    lines = help_text[help_text.index("CONFIGURATION"):].splitlines()[1:]
    variables = {}
    for line in lines:
        # Every line of the section is one variable: a line this does not read fails, rather
        # than a variable going unchecked.
        match = re.fullmatch(r"  ([A-Z][A-Z0-9_]+) +.* \(default: (.*)\)", line)
        assert match, f"not a variable line in --help: {line!r}"
        name, default = match.groups()
        variables[name] = "" if default == "none" else default
    assert variables, "--help lists no variable"
    return variables


def readme_configuration_defaults(text):
    """The configuration table of a README: name -> the default column as written (rows naming
    two variables, `A` / `B` with defaults `x` / `y`, give one entry each)."""
    defaults = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = [name.strip().strip("`") for name in cells[0].split(" / ")]
        values = [value.strip().strip("`") for value in cells[1].split(" / ")]
        if not all(re.fullmatch(r"[A-Z][A-Z0-9_]+", name) for name in names):
            continue
        if len(values) != len(names):
            values = [cells[1]] * len(names)
        defaults.update(zip(names, values))
    return defaults


def test_help_the_example_and_both_readmes_list_the_same_variables():
    """The variables --help lists (from the code's one table) are exactly those of .env.example,
    with the same defaults, and both READMEs name every one in their configuration table with its
    default: adding a setting or changing a default without documenting it fails here."""
    variables = configuration_table()
    example = (REPO / ".env.example").read_text()
    in_example = dict(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=(.*)$", example, re.M))
    assert set(variables) == set(in_example), set(variables) ^ set(in_example)
    wrong = {name: (value, variables[name]) for name, value in in_example.items() if value != variables[name]}
    assert not wrong, f".env.example differs from the defaults (written, real): {wrong}"
    for readme in ("README.md", "README_zh.md"):
        text = (REPO / readme).read_text()
        missing = sorted(name for name in variables if f"`{name}`" not in text)
        assert not missing, f"{readme} does not name {missing}"
        table = readme_configuration_defaults(text)
        absent = sorted(set(variables) - set(table))
        assert not absent, f"{readme}'s configuration table has no row for {absent}"
        wrong = {
            name: (table[name], default) for name, default in variables.items() if default and table[name] != default
        }
        assert not wrong, f"{readme} gives other defaults (written, real): {wrong}"


def test_check_config_reports_and_refuses(tmp_path):
    env = {"PATH": os.environ["PATH"], "GEMINI_API_KEYS": "AIzaSySecretKeyForCheck000000000000000@proj"}
    ok = subprocess.run([GATEWAY, "check-config"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0 and "upstream keys:    1 (1 named projects)" in ok.stdout
    assert "SecretKeyForCheck" not in ok.stdout
    bad = subprocess.run([GATEWAY, "check-config"], cwd=tmp_path, env={**env, "MAX_RETRIES": "lots"}, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("gemini-pool: MAX_RETRIES:")
    # Passwords and keys inside URLs, and the metrics token, are never printed.
    secrets = {
        "DATABASE_URL": "postgres://gateway:db-password-hunter2@db.internal:5432/pool?sslpassword=cert-secret",
        "GEMINI_BASE_URL": "https://relay-user:relay-password@relay.internal/?key=AIzaSyRelayKey000&region=eu",
        "OUTBOUND_PROXY": "http://proxy-user:proxy-password@proxy.internal:3128",
        "METRICS_TOKEN": "metrics-token-0123456789",
    }
    checked = subprocess.run([GATEWAY, "check-config"], cwd=tmp_path, env={**env, **secrets}, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    for secret in ("db-password-hunter2", "cert-secret", "relay-password", "AIzaSyRelayKey000", "proxy-password", "metrics-token-0123456789"):
        assert secret not in checked.stdout, secret
    assert "db.internal" in checked.stdout and "region=eu" in checked.stdout


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
