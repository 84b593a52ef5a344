"""Each feature's cost by removal: checkouts of this tree whose config.yaml switches one off.

    python bench/variants.py OUTDIR          # writes OUTDIR/<name>/, prints the ab.py command
    python bench/ab.py $(python bench/variants.py OUTDIR --args)

Every variant is this checkout's ``proxy/`` with the shipped ``config.yaml`` plus one change;
``all-on`` is the shipped file itself. ab.py then runs them side by side with the forwarder,
interleaved, so each row's difference from ``all-on`` is what that feature costs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
Edit = Callable[[dict[str, Any]], None]


def _routes(key: str, value: dict[str, Any]) -> Edit:
    def edit(cfg: dict[str, Any]) -> None:
        for route in cfg["routes"]:
            route.setdefault(key, {}).update(value)

    return edit


def _top(key: str, value: dict[str, Any]) -> Edit:
    def edit(cfg: dict[str, Any]) -> None:
        cfg.setdefault(key, {}).update(value)

    return edit


VARIANTS: dict[str, Edit | None] = {
    "all-on": None,
    "no-metrics": _top("metrics", {"enabled": False}),
    "no-dashboard": _top("dashboard", {"enabled": False}),
    "no-log-line": _top("logging", {"level": "warning"}),
    "no-pacing": _routes("pacing", {"enabled": False}),
    "no-context": _routes("context", {"enabled": False}),
    "no-commit-point": _routes("streaming", {"commit_point": False}),
}


def write(out: Path) -> list[str]:
    """The variant checkouts under ``out``; returns ab.py's ``--variant`` arguments."""
    args: list[str] = []
    shipped = yaml.safe_load((ROOT / "config.yaml").read_text())
    for name, edit in VARIANTS.items():
        root = out / name
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(
            ROOT / "proxy", root / "proxy", ignore=shutil.ignore_patterns("__pycache__")
        )
        cfg = yaml.safe_load(yaml.safe_dump(shipped))
        if edit is not None:
            edit(cfg)
        (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        args += ["--variant", f"{name}={root}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--args", action="store_true", help="print only ab.py's arguments")
    ns = parser.parse_args(argv)
    args = write(ns.out.resolve())
    print(" ".join(args) if ns.args else "python bench/ab.py " + " ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
