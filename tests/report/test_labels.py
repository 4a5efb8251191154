"""Names for points: one label per run, unique within a sweep, from what differs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from tests.report.fixtures import synthetic_dataset
from tcplimits.config import grid
from tcplimits.report import labels, render

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "config").glob("*.yaml"))


def _runs(config: Path, repetitions: int = 1) -> pl.DataFrame:
    cfg = {**grid.load_config(config), "repetitions": repetitions}
    return pl.DataFrame([{"run_id": p.id, **p.params.to_dict()} for p in grid.points(cfg)],
                        infer_schema_length=None)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
@pytest.mark.parametrize("repetitions", [1, 3])
def test_every_label_is_unique_within_a_sweep(config, repetitions):
    runs = _runs(config, repetitions)
    named = labels.point_labels(runs)
    assert list(named) == runs["run_id"].to_list()
    assert len(set(named.values())) == len(named), named


def test_the_synthetic_dataset_too(tmp_path):
    runs = render.load_dataset(synthetic_dataset(tmp_path))["runs"]
    named = labels.point_labels(runs)
    assert len(set(named.values())) == len(named) == runs.height


def test_a_label_says_what_differs_from_the_common_values():
    runs = pl.DataFrame({"run_id": ["a", "b", "c", "d"],
                         "port_range": ["40000-40999"] * 3 + ["32768-60999"],
                         "nofile": [15000, 300, 15000, 15000], "clients": [1, 1, 2, 1],
                         "mode": ["hold"] * 4, "rate": ["max"] * 4})
    assert labels.point_labels(runs) == {
        "a": labels.COMMON, "b": "nofile 300", "c": "2 clients", "d": "ports 32768-60999"}
    assert labels.common_sentence(runs) == (
        "Points are named by what differs from the sweep's common values: "
        "ports 40000-40999, nofile 15,000, 1 client.")


def test_repetitions_are_numbered():
    runs = pl.DataFrame({"run_id": ["a", "a_rep2", "b"], "nofile": [300, 300, 15000],
                         "clients": [1, 1, 2]})
    assert labels.point_labels(runs) == {"a": labels.COMMON, "a_rep2": f"{labels.COMMON} #2",
                                         "b": "nofile 15,000, 2 clients"}


def test_words_of_each_kind_of_value():
    assert labels.words("procs", 1) == "1 proc" and labels.words("procs", 4) == "4 procs"
    assert labels.words("rate", "max") == "max rate" and labels.words("rate", "400") == "400/s"
    assert labels.words("duration", 5.0) == "5 s"
    assert labels.words("max_connections", None) == "no max"
    assert labels.words("closer", "server") == "server closes"
    assert labels.words("some_new_field", 3) == "some_new_field 3"


def test_with_labels_puts_the_point_first_and_keeps_unknown_ids():
    df = pl.DataFrame({"run_id": ["a", "zz"], "n": [1, 2]})
    out = labels.with_labels(df, {"a": "nofile 300"})
    assert out.columns == ["point", "run_id", "n"]
    assert out["point"].to_list() == ["nofile 300", "zz"]
