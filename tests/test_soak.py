"""``beatwise bench soak``: a few seconds of the real thing (two beds, RR-rule stand-in), and the
memory-growth arithmetic on a made-up series."""

from __future__ import annotations

import json

import pytest

from beatwise.cli import main
from beatwise.commands.soak import memory_growth, soak_targets


def test_soak_command_runs_two_beds_without_loss(tmp_path, record):
    record("mitdb", "100"), record("svdb", "800")  # the data is there (else: skip, or fail in CI)
    out, png = tmp_path / "soak.json", tmp_path / "soak.png"
    rc = main(
        [
            "bench", "soak", "--minutes", "0.05", "--records", "mitdb/100", "svdb/800",
            "--model", "rules", "--sample-s", "0.5", "--json", str(out), "--png", str(png),
        ]
    )  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    for key in ("command", "date_utc", "machine", "model", "minutes", "beds", "totals",
                "memory", "series", "targets", "workdir_bytes"):  # fmt: skip
        assert key in res
    assert res["beds"] == 2
    tot = res["totals"]
    assert tot["samples_sent"] > 0
    assert tot["samples_processed"] == tot["samples_sent"]
    assert tot["samples_lost"] == 0 and tot["beds_mismatched"] == {}
    assert tot["gaps"] == 0 and tot["data_gap_alerts"] == 0
    assert tot["beats"] > 0
    assert res["series"] and {"t_s", "rss_mb", "beats_per_s", "compute_ms_p99"} <= set(
        res["series"][0]
    )
    assert any(s["rss_mb"] for s in res["series"])
    rows = {r["row"]: r for r in res["targets"]}
    assert rows["soak: samples lost (sent - processed, every bed)"]["pass"]
    assert rows["soak: sequence gaps / data_gap alerts"]["pass"]
    assert not rows["soak length (2 beds looped at --speed max)"]["pass"]  # 3 s is no soak
    assert png.stat().st_size > 0
    assert res["workdir"] is None  # the temporary folder is gone


def test_memory_growth_is_measured_after_the_warmup():
    series = [
        {"t_s": -5.0, "rss_mb": 50.0},  # loading: ignored
        {"t_s": 30.0, "rss_mb": 180.0},  # warm-up: ignored
        {"t_s": 60.0, "rss_mb": 200.0},
        {"t_s": 90.0, "rss_mb": None},  # process gone
        {"t_s": 120.0, "rss_mb": 206.0},
        {"t_s": 180.0, "rss_mb": 204.0},
    ]
    mem = memory_growth(series, warmup_s=60.0)
    assert mem["rss_mb_at_warmup"] == 200.0
    assert mem["rss_mb_max_after"] == 206.0
    assert mem["growth_pct"] == pytest.approx(3.0)
    assert mem["slope_mb_per_h"] > 0


def test_memory_growth_unmeasured_when_the_run_is_shorter_than_the_warmup():
    mem = memory_growth([{"t_s": 10.0, "rss_mb": 100.0}], warmup_s=60.0)
    assert mem["growth_pct"] is None
    tot = {
        "stream_s": 10.0, "samples_sent": 10, "samples_lost": 0, "beds_mismatched": {},
        "consumer_lost_samples": 0, "gaps": 0, "data_gap_alerts": 0,
    }  # fmt: skip
    rows = soak_targets({"beds": 1, "totals": tot, "memory": mem}, minutes=0.2)
    growth = [r for r in rows if "memory" in r["row"]][0]
    assert not growth["pass"] and "not measured" in growth["measured"]
