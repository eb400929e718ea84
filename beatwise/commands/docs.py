"""``beatwise docs``: regenerate the figures in README.md and docs/ from docs/results/."""

from __future__ import annotations

import argparse


def register(groups: dict[str, argparse._SubParsersAction]) -> None:
    p = groups[""].add_parser(
        "docs", help="regenerate the result tables in README.md and docs/ from docs/results/"
    )
    p.add_argument("--root", default=".", help="repository root (default: %(default)s)")
    p.add_argument("--check", action="store_true", help="only report stale files (exit 1)")
    p.set_defaults(func=_docs)


def _docs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from beatwise.docs import update

    changed = update(Path(args.root), check=args.check)
    for rel in changed:
        print(f"{'stale' if args.check else 'updated'}: {rel}")
    return 1 if (args.check and changed) else 0
