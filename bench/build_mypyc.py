"""Compile the proxy's hot modules with mypyc, in place: an optional speed-up, never required.

    python bench/build_mypyc.py                  # compile MODULES: .so files next to the .py
    python bench/build_mypyc.py --clean          # remove every compiled module again
    python bench/build_mypyc.py --check          # only the guards below, no compiler (~0.1 s)
    python bench/build_mypyc.py --root /tmp/copy # build another checkout (e.g. for ab.py)

Needs mypy (it ships mypyc), setuptools and a C compiler with the Python headers, at build
time only: the compiled modules import nothing of mypy's. Python imports ``proxy/x.*.so``
before ``proxy/x.py``, so after editing a listed module, build again (or ``--clean``): a
stale .so keeps running the old code. The .so files are not committed (.gitignore).

A module is listed only if it compiles, the suite passes with it compiled (but for tests that
monkeypatch a module global or put a non-float into a compiled record's float field: compiled
code binds globals early and checks annotations at run time), and it keeps two rules this
script checks before compiling:

- no ``await`` in an ``except`` or ``finally`` block. mypyc 2.4.1 mishandles an exception
  thrown into a compiled coroutine (a cancellation: the client hung up) that is handled by
  code which awaits: ``except: await ...; raise`` crashes the process (segfault), ``finally:
  await ...`` swallows the cancellation, ``except ... as e: await ...; raise e`` works but
  leaves the exception set as the thread's handled one. ``handler.py``,
  ``resilience/attempts.py`` and ``resilience/pacer.py`` do this and stay interpreted.
- no class in a listed module is subclassed in an unlisted one: an interpreted class cannot
  inherit from a compiled one (``plugins/__init__.py``, whose ``Plugin`` every plugin
  extends, stays interpreted).
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GROUP = "proxy.hot"  # the shared library: proxy/hot__mypyc.<abi>.so

# Paths under proxy/. The request path of a small JSON request, by the profile's areas.
MODULES = (
    # the attempt loop and admission
    "resilience/legs.py",
    "resilience/gate.py",
    "resilience/scope.py",
    "resilience/ratelimits.py",
    "resilience/pacing.py",
    "resilience/pacing_store.py",
    "resilience/cooldown.py",
    "resilience/hints.py",
    "resilience/commit.py",
    "forward.py",
    "relay.py",
    "crossing.py",
    "providers.py",
    "routing.py",
    "stream_content.py",
    # the exchange and its records
    "exchange.py",
    "outcomes.py",
    "errorkind.py",
    # completion: the log line, usage, metrics
    "logline.py",
    "usage.py",
    "usage_wire.py",
    "sse.py",
    "jsonbytes.py",
    "pricing.py",
    "plugins/usage.py",
    "plugins/metrics.py",
    "plugins/request_log.py",
    # context budgets
    "plugins/context_budget.py",
    "models.py",
    "context/budget.py",
    "context/counting.py",
    "context/fit.py",
    "context/windows.py",
)


def _awaits_in_handlers(tree: ast.AST) -> list[int]:
    """Lines that await inside an ``except`` or ``finally`` block."""
    lines = []
    for node in ast.walk(tree):
        blocks = [getattr(node, "finalbody", [])]
        blocks += [h.body for h in getattr(node, "handlers", [])]
        lines += [
            sub.lineno
            for block in blocks
            for stmt in block
            for sub in ast.walk(stmt)
            if isinstance(sub, ast.Await | ast.AsyncWith | ast.AsyncFor)
        ]
    return sorted(set(lines))


def _base_names(cls: ast.ClassDef) -> set[str]:
    names = set()
    for base in cls.bases:
        if isinstance(base, ast.Subscript):
            base = base.value
        if isinstance(base, ast.Name):
            names.add(base.id)
        elif isinstance(base, ast.Attribute):
            names.add(base.attr)
    return names


def problems(root: Path, modules: tuple[str, ...] = MODULES) -> list[str]:
    """Why ``modules`` must not be compiled as they stand ([] when they may)."""
    package = root / "proxy"
    listed = {package / m for m in modules}
    found = [f"proxy/{m}: no such file" for m in modules if not (package / m).is_file()]
    compiled_classes: dict[str, str] = {}
    for path in sorted(p for p in listed if p.is_file()):
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(root)
        found += [
            f"{rel}:{n}: await in an except or finally block" for n in _awaits_in_handlers(tree)
        ]
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                compiled_classes[node.name] = str(rel)
    for path in sorted(package.rglob("*.py")):
        if path in listed:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            for name in _base_names(node) & compiled_classes.keys():
                found.append(
                    f"{path.relative_to(root)}:{node.lineno}: {node.name} subclasses {name} "
                    f"({compiled_classes[name]}), which would be compiled"
                )
    return found


def compiled_files(root: Path) -> list[Path]:
    return sorted((root / "proxy").rglob("*.so"))


def clean(root: Path) -> int:
    files = compiled_files(root)
    for path in files:
        path.unlink()
    return len(files)


_SETUP = """
import sys
from setuptools import Distribution
from mypyc.build import mypycify

build, group, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
extensions = mypycify(
    [f"--cache-dir={build}/mypy-cache", *paths], group_name=group, target_dir=build + "/c"
)
dist = Distribution({"name": "llm-proxy-hot", "ext_modules": extensions})
dist.script_name = "build_mypyc"
dist.script_args = ["build_ext", "--inplace", "--build-temp", build + "/temp",
                    "--build-lib", build + "/lib"]
dist.parse_command_line()
dist.run_commands()
"""


def build(root: Path, modules: tuple[str, ...] = MODULES, *, quiet: bool = False) -> None:
    """Compile ``modules`` in place under ``root``; the C sources and objects go to a
    temporary directory, so the checkout gains only the .so files."""
    clean(root)
    with tempfile.TemporaryDirectory(prefix="llm-proxy-mypyc-") as tmp:
        argv = [sys.executable, "-c", _SETUP, tmp, GROUP]
        argv += [f"proxy/{m}" for m in modules]
        out = subprocess.DEVNULL if quiet else None
        subprocess.run(argv, cwd=root, check=True, stdout=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to build in place")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--clean", action="store_true", help="remove the compiled modules")
    mode.add_argument("--check", action="store_true", help="only check the module list")
    parser.add_argument("-q", "--quiet", action="store_true", help="no compiler output")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.clean:
        print(f"removed {clean(root)} compiled files under {root / 'proxy'}")
        return 0
    found = problems(root)
    if found:
        print("\n".join(found), file=sys.stderr)
        return 1
    if args.check:
        print(f"{len(MODULES)} modules may be compiled")
        return 0
    start = time.monotonic()
    build(root, quiet=args.quiet)
    took = time.monotonic() - start
    print(f"compiled {len(MODULES)} modules in {took:.0f} s: {len(compiled_files(root))} .so files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
