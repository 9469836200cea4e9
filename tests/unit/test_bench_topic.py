"""`interlink bench topic`: row selection and a tiny real run (spawned processes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from interlink._bench import topic as bench_topic
from interlink.cli import main

pytestmark = pytest.mark.timeout(180)


def test_select_rows() -> None:
    assert [r.label for r in bench_topic.select(["interlink"])] == [
        "interlink.Topic block",
        "interlink.Topic drop",
        "interlink.Topic block raw",
        "interlink.Topic block batch",
    ]
    assert [r.label for r in bench_topic.select(["pyzmq"])] == ["pyzmq PUB/SUB"]
    assert [r.label for r in bench_topic.select([])] == [r.label for r in bench_topic.ROWS]
    with pytest.raises(ValueError, match="unknown topic"):
        bench_topic.select(["nope"])


def test_tiny_run_measures_every_row() -> None:
    settings = bench_topic.TopicSettings.choose(quick=True, count=300, timeout=60)
    assert settings.messages == 300
    results = bench_topic.run(bench_topic.select([]), settings)
    assert [(r.label, r.subscribers) for r in results] == [
        (row.label, n) for row in bench_topic.ROWS for n in (1, 4)
    ]
    for r in results:
        # Every row is measured, or says why not (pyzmq may be missing).
        assert r.status in ("ok", "n/a"), (r.label, r.subscribers, r.reason)
        if r.status == "n/a":
            assert r.reason
            continue
        f = r.figures
        assert f["per_sub_min"] > 0 and f["per_sub_mean"] >= f["per_sub_min"]
        # every subscriber accounts for every message: received or lost
        assert f["received"] + f["lost"] == 300 * r.subscribers, r.label
        if r.label != "interlink.Topic drop":
            assert f["lost"] == 0
    scale = bench_topic.scaling(results)
    assert scale["interlink.Topic block"] > 0


def test_cli_json_to_stdout() -> None:
    result = CliRunner().invoke(
        main,
        ["bench", "topic", "--quick", "--count", "200", "--only", "interlink", "--json", "-"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["benchmark"] == "topic"
    assert doc["reference"] == "interlink.Topic block"
    assert {r["subscribers"] for r in doc["results"]} == {1, 4}


def test_rounds_pair_the_fanouts() -> None:
    settings = bench_topic.TopicSettings.choose(quick=True, count=300, timeout=60)
    settings = bench_topic.TopicSettings(**{**settings.__dict__, "rounds": 2})
    (row,) = bench_topic.select(["interlink.Topic block"])
    results = bench_topic.run([row], settings)
    assert [r.subscribers for r in results] == [1, 4]
    assert all(r.status == "ok" and r.figures["rounds"] == 2 for r in results)
    assert results[1].figures["paired_ratio"] > 0
    assert bench_topic.scaling(results)[row.label] == results[1].figures["paired_ratio"]
