"""`interlink bench queue`: row selection and a tiny real run (spawned processes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from interlink._bench import queue as bench_queue
from interlink.cli import main

pytestmark = pytest.mark.timeout(180)


def test_select_rows() -> None:
    assert [r.label for r in bench_queue.select(["interlink"])] == ["interlink.Queue"]
    assert [r.label for r in bench_queue.select(["multiprocessing.queue"])] == [
        "multiprocessing.Queue"
    ]
    assert [r.label for r in bench_queue.select([])] == [r.label for r in bench_queue.ROWS]
    with pytest.raises(ValueError, match="unknown queue"):
        bench_queue.select(["nope"])


def test_tiny_run_measures_every_row() -> None:
    settings = bench_queue.QueueSettings.choose(quick=True, count=200, timeout=60)
    assert (settings.messages, settings.arrays) == (200, 4)
    results = bench_queue.run(bench_queue.select([]), settings)
    assert [(r.label, r.scenario) for r in results] == [
        (row.label, scenario)
        for scenario in ("small", "small4x4", "array")
        for row in bench_queue.ROWS
    ]
    for r in results:
        # Every row is measured, or says why not (an optional peer may be missing).
        assert r.status in ("ok", "n/a"), (r.label, r.scenario, r.reason)
        if r.status == "n/a":
            assert r.reason
        else:
            assert r.figures["per_s"] > 0
    mine = {r.scenario: r for r in results if r.label == "interlink.Queue"}
    assert mine["small"].status == "ok"
    assert mine["small4x4"].status == "ok"
    for r in results:
        if r.scenario == "small4x4" and r.status == "ok":
            # every object reached exactly one consumer (else the cell is an error)
            assert 0 <= r.figures["min_share"] <= 1 / bench_queue.CONSUMERS
    rel = bench_queue.ratios(results)
    assert rel["interlink.Queue", "small"] == 1.0
    assert rel["interlink.Queue", "small4x4"] == 1.0
    assert rel["multiprocessing.Queue", "small"] > 0
    assert rel["multiprocessing.Queue", "small4x4"] > 0
    if mine["array"].status == "ok":  # numpy installed
        assert mine["array"].figures["mib_per_s"] == pytest.approx(
            mine["array"].figures["per_s"] * 8
        )


def test_cli_json_to_stdout() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "queue", "--quick", "--count", "200", "--json", "-"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["benchmark"] == "queue"
    assert doc["reference"] == "interlink.Queue"
    assert set(doc["settings"]) == {"messages", "arrays", "timeout"}
    rows = doc["results"]
    assert len(rows) == 3 * len(bench_queue.ROWS)
    assert {row["scenario"] for row in rows} == {"small", "small4x4", "array"}
    for row in rows:
        assert set(row) == {"queue", "scenario", "status", "reason", "figures", "ratio"}
        assert row["status"] == "ok" or row["reason"], row


def test_four_by_four_counts_every_object_once() -> None:
    settings = bench_queue.QueueSettings.choose(quick=True, count=4_000, timeout=60)
    (result,) = [
        bench_queue.measure(row, "small4x4", settings) for row in bench_queue.select(["interlink"])
    ]
    assert result.status == "ok", result.reason
    assert result.figures["per_s"] > 0 and result.figures["elapsed_s"] > 0


def test_cli_rejects_plot() -> None:
    result = CliRunner().invoke(main, ["bench", "queue", "--plot", "x.png"])
    assert result.exit_code != 0
    assert "only available for the channel benchmark" in result.output
