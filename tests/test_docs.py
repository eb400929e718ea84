from __future__ import annotations

from pathlib import Path

import pytest

from beatwise.docs import render, update

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_docs_figures_are_generated_from_the_results():
    stale = update(ROOT, check=True)
    assert stale == [], f"run 'beatwise docs': {stale} differ from docs/results/"


def test_include_copies_a_section(tmp_path):
    (tmp_path / "a.md").write_text("x\n<!-- section: s1 -->\n| 1 | 2 |\n<!-- end section -->\ny\n")
    text = "top\n<!-- include: a.md#s1 -->\nold\n<!-- end include -->\nbottom\n"
    out = render(text, root=tmp_path)
    assert out == "top\n<!-- include: a.md#s1 -->\n| 1 | 2 |\n<!-- end include -->\nbottom\n"
    assert render(out, root=tmp_path) == out  # idempotent


def test_missing_section_names_the_file_and_section(tmp_path):
    (tmp_path / "a.md").write_text("nothing here\n")
    with pytest.raises(ValueError, match=r"a\.md.*section: s2"):
        render("<!-- include: a.md#s2 -->\n<!-- end include -->\n", root=tmp_path)


def test_detection_targets_say_met_or_not(tmp_path):
    import json

    (tmp_path / "docs/results").mkdir(parents=True)
    base = {"se": 99.9, "ppv": 99.9, "der": 0.2, "x_realtime": 6e4, "x_realtime_chunked_1s": 3e4}
    for db, se in (("mitdb", 99.7), ("svdb", 99.9)):
        totals = {**base, "se": se}
        (tmp_path / f"docs/results/detect_{db}.json").write_text(json.dumps({"totals": totals}))
    out = render("<!-- targets: detection -->\n<!-- end targets -->\n", root=tmp_path)
    assert "| mitdb Se | >= 99.80 % | 99.70 % | **not met** |" in out
    assert "| svdb Se | >= 99.80 % | 99.90 % | met |" in out


def test_a_benchmark_footnote_gives_the_machine_probe_when_the_run_measured_it(tmp_path):
    """The machine is shared: a stream benchmark says how fast it was before and after."""
    import json

    from beatwise.bedside import RuleClassifier
    from beatwise.commands.live import machine_probe_ms

    (tmp_path / "docs/results").mkdir(parents=True)
    report = {
        "command": "beatwise bench stream",
        "date_utc": "2026-12-04T00:00:00Z",
        "model": "m.pt",
        "machine": {"cpus": 2},
        "targets": [{"row": "r", "target": "<= 1", "measured": "0.5", "pass": True}],
    }
    path = tmp_path / "docs/results/bench_stream.json"
    path.write_text(json.dumps(report))
    block = "<!-- targets: stream -->\n<!-- end targets -->\n"
    assert "(2026-12-04T00:00:00Z, 2 CPUs, model `m.pt`)" in render(block, root=tmp_path)
    probe = machine_probe_ms(RuleClassifier(), runs=3)
    assert probe > 0
    report["machine"]["probe_ms"] = {"before": probe, "after": 4.5}
    path.write_text(json.dumps(report))
    out = render(block, root=tmp_path)
    assert f"2 CPUs, machine probe {probe} / 4.5 ms, model `m.pt`" in out
