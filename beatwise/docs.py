"""Keep the figures in the README and docs/ generated from the committed results.

Two kinds of generated block in a markdown file:

- ``<!-- table: docs/results/x.json [per_record] [worst=N] -->`` ... ``<!-- end table -->``:
  a detection table rendered from that JSON (:func:`beatwise.eval.detection.markdown_table`);
- ``<!-- include: docs/y.md#name -->`` ... ``<!-- end include -->``: a copy of the part of
  ``docs/y.md`` between ``<!-- section: name -->`` and ``<!-- end section -->``;
- ``<!-- targets: detection -->`` ... ``<!-- end targets -->``: the detection targets of
  issue 2 against ``docs/results/detect_{mitdb,svdb}.json``, met or not; ``targets: stream``,
  ``restart``, ``soak``: the target rows a benchmark command wrote into its JSON
  (:data:`BENCH_TARGETS`).

``beatwise docs`` rewrites them in place; ``beatwise docs --check`` fails when a file is
stale, and the test suite runs that check, so no figure is typed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

from beatwise.eval.detection import markdown_table

__all__ = ["DOC_FILES", "render", "update"]

#: Files with generated blocks, relative to the repository root.
DOC_FILES = ("docs/detection.md", "docs/live.md", "README.md")

_TABLE = re.compile(
    r"(?P<open><!-- table: (?P<path>\S+?)(?P<opts>(?: [\w=]+)*) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end table -->)",
    re.DOTALL,
)
_INCLUDE = re.compile(
    r"(?P<open><!-- include: (?P<path>\S+?)#(?P<name>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end include -->)",
    re.DOTALL,
)


_TARGETS = re.compile(
    r"(?P<open><!-- targets: (?P<kind>[\w-]+) -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end targets -->)",
    re.DOTALL,
)

#: (label, database, totals key, comparison, target, unit)
DETECTION_TARGETS = (
    ("mitdb Se", "mitdb", "se", ">=", 99.80, "%"),
    ("mitdb +P", "mitdb", "ppv", ">=", 99.80, "%"),
    ("mitdb DER", "mitdb", "der", "<=", 0.40, "%"),
    ("svdb Se", "svdb", "se", ">=", 99.80, "%"),
    ("svdb +P", "svdb", "ppv", ">=", 99.80, "%"),
    ("speed, whole record in one push (mitdb)", "mitdb", "x_realtime", ">=", 50_000, "x"),
    ("speed, 1-second chunks (mitdb)", "mitdb", "x_realtime_chunked_1s", ">=", 20_000, "x"),
    ("speed, whole record in one push (svdb)", "svdb", "x_realtime", ">=", 50_000, "x"),
    ("speed, 1-second chunks (svdb)", "svdb", "x_realtime_chunked_1s", ">=", 20_000, "x"),
)


def detection_targets(root: Path) -> str:
    """Markdown table: each detection target, the measured figure, met or not."""
    import json

    totals = {
        db: json.loads((root / f"docs/results/detect_{db}.json").read_text())["totals"]
        for db in ("mitdb", "svdb")
    }
    lines = ["| | target | measured | |", "|---|---:|---:|---|"]
    for label, db, key, op, target, unit in DETECTION_TARGETS:
        value = totals[db][key]
        met = value >= target if op == ">=" else value <= target
        fmt = (lambda v: f"{v:,.0f}x") if unit == "x" else (lambda v: f"{v:.2f} %")
        lines.append(
            f"| {label} | {op} {fmt(target)} | {fmt(value)} | {'met' if met else '**not met**'} |"
        )
    lines.append("")
    lines.append("*From `beatwise eval detect --db mitdb|svdb` (docs/results/detect_*.json).*")
    return "\n".join(lines) + "\n"


#: Benchmarks whose JSON carries its own target rows: ``<!-- targets: KIND -->``.
BENCH_TARGETS = {
    "stream": "docs/results/bench_stream.json",
    "restart": "docs/results/bench_restart.json",
    "soak": "docs/results/soak.json",
}


def bench_targets(root: Path, kind: str) -> str:
    """Markdown table of the targets a benchmark command checked, met or not."""
    import json

    if kind not in BENCH_TARGETS:
        raise ValueError(
            f"targets block {kind!r}: expected detection or one of {sorted(BENCH_TARGETS)}."
        )
    report = json.loads((root / BENCH_TARGETS[kind]).read_text())
    lines = ["| | target | measured | |", "|---|---|---|---|"]
    for t in report["targets"]:
        met = {True: "met", False: "**not met**", None: ""}[t["pass"]]
        lines.append(f"| {t['row']} | {t['target']} | {t['measured']} | {met} |")
    lines.append("")
    machine = report.get("machine", {})
    where = f", {machine['cpus']} CPUs" if "cpus" in machine else ""
    probe = machine.get("probe_ms")
    if probe:  # beatwise.commands.live.machine_probe_ms, before and after the run
        where += f", machine probe {probe['before']} / {probe['after']} ms"
    lines.append(
        f"*From `{report['command']}` ({report['date_utc']}{where}, model `{report['model']}`).*"
    )
    return "\n".join(lines) + "\n"


def _section(path: Path, name: str) -> str:
    text = path.read_text()
    m = re.search(
        rf"<!-- section: {re.escape(name)} -->\n(.*?)<!-- end section -->", text, re.DOTALL
    )
    if m is None:
        raise ValueError(
            f"{path}: no '<!-- section: {name} -->' ... '<!-- end section -->' block to include."
        )
    return m.group(1)


def render(text: str, *, root: Path) -> str:
    """Return ``text`` with every generated block rendered from the files under ``root``."""

    def table(m: re.Match) -> str:
        opts = m["opts"].split()
        worst = next((int(o.split("=")[1]) for o in opts if o.startswith("worst=")), 0)
        body = markdown_table(root / m["path"], per_record="per_record" in opts, worst=worst)
        return f"{m['open']}{body}\n{m['close']}"

    def include(m: re.Match) -> str:
        return f"{m['open']}{_section(root / m['path'], m['name'])}{m['close']}"

    def targets(m: re.Match) -> str:
        kind = m["kind"]
        body = detection_targets(root) if kind == "detection" else bench_targets(root, kind)
        return f"{m['open']}{body}{m['close']}"

    text = _TARGETS.sub(targets, _TABLE.sub(table, text))
    return _INCLUDE.sub(include, text)


#: Result files of ``beatwise eval classify`` that docs/classification.md is made of.
CLASSIFY_RESULTS = (
    "docs/results/classify_seed.json",
    "docs/results/classify_seed_strict.json",
    "docs/results/classify_interpatient.json",
    "docs/results/classify_seed_biosppy.json",
)


def _classification_page(root: Path) -> str:
    import json

    from beatwise.eval.classification import render_report

    results = [(rel, json.loads((root / rel).read_text())) for rel in CLASSIFY_RESULTS]
    return render_report(results)


def update(root: Path, *, check: bool = False) -> list[str]:
    """Regenerate docs/classification.md and the blocks of :data:`DOC_FILES` under ``root``;
    write them unless ``check``.

    Returns the files that were (or, with ``check``, would be) changed.
    """
    changed = []
    pages = {"docs/classification.md": _classification_page}
    for rel in (*pages, *DOC_FILES):
        path = root / rel
        old = path.read_text()
        new = pages[rel](root) if rel in pages else render(old, root=root)
        if new != old:
            changed.append(rel)
            if not check:
                path.write_text(new)
    return changed
