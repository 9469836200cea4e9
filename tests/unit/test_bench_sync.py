"""`interlink bench sync`: row selection and a tiny real run (spawned processes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from interlink._bench import sync as bench_sync
from interlink.cli import main


def test_select_rows() -> None:
    assert [p.label for p in bench_sync.select(["interlink"])] == [
        "interlink.Lock",
        "interlink.RLock",
        "interlink.Semaphore",
    ]
    assert [p.label for p in bench_sync.select(["threading.lock"])] == ["threading.Lock"]
    with pytest.raises(ValueError, match="unknown primitive"):
        bench_sync.select(["nope"])


def test_tiny_run_measures_and_compares() -> None:
    settings = bench_sync.SyncSettings.choose(quick=True, count=200, timeout=60)
    rows = bench_sync.select(["interlink.Lock", "threading.Lock", "multiprocessing.Lock"])
    results = bench_sync.run(rows, settings)
    assert [(r.label, r.scenario) for r in results] == [
        ("interlink.Lock", "uncontended"),
        ("threading.Lock", "uncontended"),
        ("multiprocessing.Lock", "uncontended"),
        ("interlink.Lock", "handoff"),
        ("multiprocessing.Lock", "handoff"),
    ]
    assert all(r.status == "ok" for r in results), [r.reason for r in results]
    # the uncontended rows ran interleaved in one process, paired with the reference
    assert len({r.figures["pid"] for r in results[:3]}) == 1
    assert all("x_ref" in r.figures for r in results[:3])
    rel = bench_sync.ratios(results)
    assert rel["threading.Lock", "uncontended"] == 1.0
    assert rel["interlink.Lock", "handoff"] == 1.0
    hand = results[3].figures
    assert 0 < hand["p50_us"] <= hand["p99_us"]


def test_cli_json_to_stdout() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "sync", "--count", "200", "--only", "threading.Lock", "--json", "-"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["benchmark"] == "sync"
    assert [r["primitive"] for r in doc["results"]] == ["threading.Lock"]
    assert doc["results"][0]["status"] == "ok"


def test_cli_rejects_plot() -> None:
    result = CliRunner().invoke(main, ["bench", "sync", "--plot", "x.png"])
    assert result.exit_code != 0
    assert "only available for the channel benchmark" in result.output
