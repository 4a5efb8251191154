"""Reproduce and download: the command, the config beside the page, versions, table links."""

from __future__ import annotations

import polars as pl

from tests.report.fixtures import synthetic_dataset
from tcplimits.report import downloads, render
from tcplimits.report.sections import reproduce
from tcplimits.results import dataset


def test_the_box_gives_the_command_the_config_the_tables_and_the_versions(tmp_path):
    out = tmp_path / "report"
    data = render.copy_dataset(synthetic_dataset(tmp_path / "ds"), out / "data")
    downloads.write_csvs(data)
    (out / render.CONFIG_COPY).write_text("points: []\n")
    runs = pl.read_parquet(data / "runs.parquet")
    box = reproduce.box(data, runs, config="config/my <sweep>.yaml")
    assert "snakemake --cores 4 --configfile config/my &lt;sweep&gt;.yaml" in box
    assert f'<a href="{render.CONFIG_COPY}">' in box
    for name in dataset.TABLE_NAMES:
        assert f'<a href="data/{name}.parquet">' in box and f'<a href="data/{name}.csv">' in box
    assert f'<a href="data/{downloads.DICTIONARY_FILE}">' in box
    for package in reproduce.PACKAGES:
        assert f">{package}<" in box
    assert render.external_references(box) == []


def test_without_a_recorded_config_the_box_says_how_to_record_it(tmp_path, monkeypatch):
    monkeypatch.delenv(render.CONFIG_ENV, raising=False)
    data = render.copy_dataset(synthetic_dataset(tmp_path / "ds"), tmp_path / "r" / "data")
    box = reproduce.box(data)
    assert "<code>snakemake --cores 4</code>" in box
    assert "tcplimits report --config-file PATH" in box
    assert ">Parquet<" in box and ">CSV<" not in box  # no CSV written: none linked
