"""`millm batch sweep | run | collect`: a steering sweep built from prompts x settings, run as a batch on a live
server, and collected into a CSV table with each row's applied steering."""

from __future__ import annotations

import csv
import json

import click
import pytest
from click.testing import CliRunner

from millm.__main__ import main
from millm.cli_batch import parse_steer


def test_parse_steer_settings():
    assert parse_steer("16:4,16:8") == [[{"index": 16, "strength": 4.0}], [{"index": 16, "strength": 8.0}]]
    assert parse_steer("16:4+3:-1.5") == [[{"index": 16, "strength": 4.0}, {"index": 3, "strength": -1.5}]]
    with pytest.raises(click.BadParameter):
        parse_steer("16")


def test_sweep_run_and_collect_against_a_live_server(server, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello world\n\nOnce upon a time\n")
    batch_file = tmp_path / "sweep.jsonl"
    runner = CliRunner()
    r = runner.invoke(main, ["batch", "sweep", str(prompts), "--model", "test-org/tiny", "--steer", "7:6,7:12",
                             "--steer", "9:5+11:-5", "--max-tokens", "6", "-o", str(batch_file)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in batch_file.read_text().splitlines()]
    assert len(lines) == 2 * 4  # baseline + 3 settings, per prompt
    assert lines[0]["body"]["steering"] == {"features": []}
    assert lines[3]["body"]["steering"]["features"] == [{"index": 9, "strength": 5.0}, {"index": 11, "strength": -5.0}]
    table = tmp_path / "results.csv"
    r = runner.invoke(main, ["batch", "run", str(batch_file), "--url", server.url, "-o", str(table)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(table.open()))
    assert [row["custom_id"] for row in rows] == [ln["custom_id"] for ln in lines]
    assert {row["setting"] for row in rows} == {"baseline", "7:6", "7:12", "9:5+11:-5"}
    assert all(row["error"] == "" and row["finish_reason"] in ("stop", "length") for row in rows)
    by = {(row["prompt"], row["setting"]): row for row in rows}
    assert by[("Hello world", "7:12")]["text"] != by[("Hello world", "baseline")]["text"]
    applied = json.loads(by[("Hello world", "7:12")]["applied"])["features"]
    assert [(f["index"], f["strength"]) for f in applied] == [(7, 12.0)]
    # collect gives the same table from downloaded files
    out = tmp_path / "again.csv"
    res = tmp_path / "res.jsonl"
    res.write_text("")
    r = runner.invoke(main, ["batch", "collect", str(batch_file), str(res), "-o", str(out)])
    assert r.exit_code == 0
    assert all(row["error"] == "no result" for row in csv.DictReader(out.open()))
