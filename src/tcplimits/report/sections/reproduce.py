"""Reproduce and download: the command that made the run set, the config it ran with (copied
beside the page), the software that drew the page, and every table of ``data/`` with its
CSV and the data dictionary (report/downloads.py)."""

from __future__ import annotations

import html
import os
from importlib import metadata
from pathlib import Path

import polars as pl

from tcplimits.report import downloads, render
from tcplimits.report.blocks import Blocks
from tcplimits.report.data import Data
from tcplimits.results import dataset

PACKAGES = ("tcplimits", "polars", "altair", "vl-convert-python")
CORES = 4  # the README's command


def command(config: str | None) -> str:
    """The command that reruns the sweep: Snakemake with the config it ran with."""
    return f"snakemake --cores {CORES}" + (f" --configfile {config}" if config else "")


def config_source() -> str | None:
    """The config as Snakemake was given it, where `tcplimits report` was told."""
    return os.environ.get(render.CONFIG_ENV) or None


def versions(runs: pl.DataFrame | None = None) -> pl.DataFrame:
    """The software that drew this page, and the tcplimits versions that ran the points."""
    rows = []
    for name in PACKAGES:
        try:
            rows.append({"package": name, "version": metadata.version(name)})
        except metadata.PackageNotFoundError:
            rows.append({"package": name, "version": "not installed"})
    if runs is not None and "env_tcplimits_version" in runs.columns:
        ran = sorted(set(runs["env_tcplimits_version"].drop_nulls().to_list()))
        if ran:
            rows.append({"package": "tcplimits (ran the points)", "version": ", ".join(ran)})
    return pl.DataFrame(rows, schema={"package": pl.Utf8, "version": pl.Utf8})


def _link(path: str, text: str | None = None) -> str:
    return f'<a href="{html.escape(path)}">{html.escape(text or path)}</a>'


def table_links(data_dir: Path) -> pl.DataFrame:
    """Each table of ``data/``: rows, its Parquet and CSV files (links relative to the page)
    and what a row is."""
    rows = []
    for name in dataset.TABLE_NAMES:
        parquet = Path(data_dir) / f"{name}.parquet"
        count = pl.scan_parquet(parquet).select(pl.len()).collect().item() if parquet.exists() else 0
        files = [_link(f"data/{name}.parquet", "Parquet")]
        if (Path(data_dir) / f"{name}.csv").exists():
            files.append(_link(f"data/{name}.csv", "CSV"))
        rows.append({"table": name, "rows": count, "files": " · ".join(files)})
    return pl.DataFrame(rows, schema={"table": pl.Utf8, "rows": pl.Int64, "files": pl.Utf8})


def box(data_dir: Path, runs: pl.DataFrame | None = None,
        config: str | None = None, config_copy: Path | None = None) -> str:
    """The reproduce-and-download box, as HTML."""
    config = config or config_source()
    copy = config_copy if config_copy is not None else Path(data_dir).parent / render.CONFIG_COPY
    parts = ['<div class="tcpl-box reproduce">', "<p><strong>Rerun the sweep</strong> "
             "(a checkout of tcplimits, Docker, <code>scripts/bootstrap.sh</code> once):</p>",
             f"<pre><code>{html.escape(command(config))}</code></pre>"]
    if copy.exists():
        parts.append(f"<p>The config it ran with: {_link(render.CONFIG_COPY)}"
                     + (f" (the sweep's <code>{html.escape(config)}</code>)." if config else ".")
                     + "</p>")
    else:
        parts.append("<p>The config it ran with was not recorded with this dataset "
                     "(<code>tcplimits report --config-file PATH</code> copies it here).</p>")
    parts.append("<p><strong>The tables</strong> this page was drawn from, beside it in "
                 f"<code>data/</code>; every column is described in "
                 f"{_link('data/' + downloads.DICTIONARY_FILE)}:</p>")
    parts.append(render.html_table(table_links(data_dir), raw={"files"}))
    parts.append("<p><strong>Software</strong> that drew this page:</p>")
    parts.append(render.html_table(versions(runs)))
    parts.append("</div>")
    return "\n".join(parts)


def dictionary_details() -> str:
    """The data dictionary, folded: every column of every table."""
    return ("<details><summary>The data dictionary (every column of every table)</summary>"
            + render.html_table(downloads.dictionary()) + "</details>")


def reproduce(d: Data, data_dir: Path) -> Blocks:
    """The reproduce-and-download box and the data dictionary."""
    return Blocks().html(box(data_dir, d.every)).html(dictionary_details())
