"""What ships: setup.cfg declares every package the code imports, the license file matches the
metadata, the version has one source, and the container image is built from files that exist,
keeps the rest of the checkout out, and runs a config that passes --check and listens where
``docker run -p`` reaches it."""

from __future__ import annotations

import ast
import configparser
import fnmatch
import re
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from proxy.version import __version__

ROOT = Path(__file__).resolve().parents[2]
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg")


def requirement_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        name = line.split(";")[0].strip()
        for sep in "<>=!~[ ":
            name = name.split(sep)[0]
        if name:
            names.add(name.lower().replace("_", "-"))
    return names


def _optional(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Imported inside ``try: ... except ImportError``: an optional dependency."""
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
            for h in node.handlers
        ):
            return True
    return False


def third_party_imports() -> dict[str, bool]:
    """Top-level module -> imported only optionally, over every module in proxy/."""
    found: dict[str, bool] = {}
    for path in (ROOT / "proxy").rglob("*.py"):
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "proxy":
                    continue
                found[top] = found.get(top, True) and _optional(node, parents)
    return found


def test_every_imported_package_is_declared() -> None:
    required = requirement_names(SETUP["options"]["install_requires"])
    extras = set().union(
        *(requirement_names(v) for k, v in SETUP["options.extras_require"].items() if k != "test")
    )
    dists = packages_distributions()
    missing = []
    for module, optional in sorted(third_party_imports().items()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        declared = names & (required | extras) if optional else names & required
        if not declared:
            missing.append((module, sorted(names), "extra" if optional else "install_requires"))
    assert [] == missing
    assert "yarl" in required


def test_license_file_matches_the_metadata() -> None:
    meta = SETUP["metadata"]
    assert ("MIT", "LICENSE") == (meta["license"], meta["license_files"])
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text


def test_setup_cfg_has_no_leftover_tool_sections_and_one_version() -> None:
    assert [] == [s for s in SETUP.sections() if s in ("flake8", "pycodestyle", "isort")]
    assert "attr: proxy.version.__version__" == SETUP["metadata"]["version"]
    assert __version__.count(".") == 2


# -- the container image ------------------------------------------------------------------

DOCKERFILE = ROOT / "systemd" / "Dockerfile"


def instructions(name: str) -> list[list[str]]:
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words and words[0] == name:
            out.append(words[1:])
    return out


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path (or a parent of it) decides."""
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        globbed = pattern.replace("**/", "")
        if any(
            fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.split("/")[-1], globbed)
            for p in prefixes
        ):
            ignored = not negated
    return ignored


def test_image_copies_files_that_exist_and_the_context_keeps_them() -> None:
    sources = [src for words in instructions("COPY") for src in words[:-1]]
    assert ["setup.cfg", "pyproject.toml", "README.md", "LICENSE", "proxy"] == sources[:5]
    assert [] == [s for s in sources if not (ROOT / s).exists()]
    assert [] == [s for s in sources if dockerignored(s)]
    assert dockerignored("proxy/__pycache__/app.cpython-311.pyc")
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        "tests/conftest.py",
        "bench/run.py",
        "config.yaml",
    ):
        assert dockerignored(path), path


def image_config() -> Path:
    [entrypoint] = instructions("ENTRYPOINT")
    args = [a.strip('[]",') for a in entrypoint]
    target = args[args.index("--config") + 1]
    [source] = [words[0] for words in instructions("COPY") if words[-1] == target]
    return ROOT / source


def test_image_config_passes_check_and_listens_where_docker_run_p_reaches() -> None:
    path = image_config()
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--config", str(path), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (0, "") == (result.returncode, result.stderr)
    listen = yaml.safe_load(path.read_text())["listen"]
    [expose] = instructions("EXPOSE")
    assert ("0.0.0.0", True, [str(listen["port"])]) == (
        listen["host"],
        listen["allow_remote"],
        expose,
    )
    healthcheck = DOCKERFILE.read_text().split("HEALTHCHECK", 1)[1]
    assert f"http://127.0.0.1:{listen['port']}/healthz" in healthcheck


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy not installed")
def test_operations_modules_type_check() -> None:
    owned = [
        "config.py",
        "config_parse.py",
        "cli.py",
        "connections.py",
        "listeners.py",
        "service.py",
        "supervisor.py",
        "sdnotify.py",
        "logs.py",
        "metrics.py",
        "version.py",
        "resilience/cooldown.py",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", *(f"proxy/{f}" for f in owned)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert 0 == result.returncode, result.stdout


def test_committed_files_name_no_path_of_the_machine_they_were_written_on() -> None:
    """Docs and scripts say ``python bench/run.py``, never a developer's venv or checkout."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing committed to read")
    listed = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    home_like = re.compile(rb"(?<![\w.~-])/(?:wo" rb"rk|ro" rb"ot|ho" rb"me)/[\w.-]+")
    found = []
    for name in filter(None, listed):
        path = ROOT / name.decode()
        if not path.is_file() or path.suffix in {".tiktoken", ".png"}:
            continue
        found += [f"{name.decode()}: {m.decode()}" for m in home_like.findall(path.read_bytes())]
    assert [] == found
