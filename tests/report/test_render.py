"""The renderer: the .qmd -> notebook adapter, offline HTML, and the report on synthetic data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from tests.report.fixtures import RUN_IDS, assert_report, synthetic_dataset
from tcplimits.results import dataset
from tcplimits.report import render

REPORT = render.REPORT_SOURCE

SMALL_QMD = '''---
title: "A small report"
subtitle: "with hidden and shown cells"
execute:
  echo: false
number-sections: true
---

## First section {#sec-first}

Some *text*; the chart is @fig-small, in @sec-second.

```{python}
#| include: false
import os
import altair as alt
import polars as pl
from tcplimits.report import charts
charts.use_offline_renderer()
SECRET_SETUP = 1
```

```{python}
HIDDEN_CODE_MARK = os.environ["TCPLIMITS_DATASET"].endswith("data")
print("hidden-code-output", HIDDEN_CODE_MARK)
```

## Second section {#sec-second}

```{python}
#| echo: true
shown_code_mark = 6 * 7
shown_code_mark
```

```{python}
#| output: false
print("output-that-must-not-show")
```

```{python}
#| eval: false
raise RuntimeError("never run")
```

```{python}
#| output: asis
print("**asis-markdown**")
```

```bash
echo shell-block-shown-not-run
```

```{python}
#| label: fig-small
#| fig-cap: "Two <points>"
#| fig-alt: "Two dots rising to the right"
alt.Chart(pl.DataFrame({"x": [1, 2], "y": [3, 4]})).mark_point().encode(x="x", y="y")
```
'''


# --- the adapter ------------------------------------------------------------------------------

def test_front_matter_is_split_off():
    front, body = render.split_front_matter(SMALL_QMD)
    assert front["title"] == "A small report" and front["execute"] == {"echo": False}
    assert body.lstrip().startswith("## First section")
    assert render.split_front_matter("no front matter\n") == ({}, "no front matter\n")


def test_cell_options_are_read_and_stripped():
    options, code = render.cell_options("#| echo: false\n#| output: asis\nx = 1\n#| not an option")
    assert options == {"echo": False, "output": "asis"}
    assert code == "x = 1\n#| not an option"


def test_fences_python_runs_others_stay_text():
    body = "```{python}\nx = 1\n```\n\n```bash\necho hi\n```\n\n````{.python}\nshown\n````\n"
    rewritten = render._rewrite_fences(body)
    assert "```python\nx = 1" in rewritten and "```{.bash}" in rewritten
    assert render._restore_fences("```{.bash}\necho hi\n```") == "```bash\necho hi\n```"


def test_fence_inside_a_block_is_left_alone():
    body = "````markdown\n```{python}\nnot a cell\n```\n````\n"
    nb = render.qmd_to_notebook(body)
    assert [c.cell_type for c in nb.cells] == ["markdown"]
    assert "```{python}" in nb.cells[0].source


def test_qmd_to_notebook_tags():
    nb = render.qmd_to_notebook(SMALL_QMD)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in code]
    assert tags == [["remove_input", "remove_cell"], ["remove_input"], [],
                    ["remove_input", "remove_output"], ["remove_input", "skip-execution"],
                    ["remove_input"], ["remove_input"]]
    assert not any(line.startswith("#|") for c in code for line in c.source.splitlines())
    assert nb.metadata["title"] == "A small report"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "```bash\necho shell-block-shown-not-run" in markdown


def test_project_execute_options_are_defaults():
    nb = render.qmd_to_notebook("```{python}\nx = 1\n```\n", project={"execute": {"echo": False}})
    assert nb.cells[0].metadata["tags"] == ["remove_input"]


# --- rendering --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("small")
    (tmp / "small.qmd").write_text(SMALL_QMD)
    data = tmp / "out" / "data"
    data.mkdir(parents=True)
    return render.render_with_nbconvert(tmp / "small.qmd", data)


def test_small_qmd_renders_hidden_and_shown_cells(small_page):
    page = small_page
    assert "<title>A small report</title>" in page and "with hidden and shown cells" in page
    assert "SECRET_SETUP" not in page                          # include: false
    assert "HIDDEN_CODE_MARK" not in page                      # echo: false: code hidden ...
    assert "hidden-code-output True" in page                   # ... output shown, env var set
    assert "shown_code_mark" in page and ">42<" in page        # echo: true
    assert "output-that-must-not-show" not in page             # output: false
    assert "never run" not in page                             # eval: false
    assert "<strong>asis-markdown</strong>" in page            # output: asis -> Markdown
    assert page.count("shell-block-shown-not-run") == 1        # display-only block, not run
    assert 'class="tcpl-chart"' in page and "<svg" in page     # the chart, inline SVG


def test_small_qmd_numbers_sections_and_figures_as_quarto_does(small_page):
    page = small_page
    assert '<h2 id="sec-first"><span class="header-section-number">1</span> First section' in page
    assert '<h2 id="sec-second"><span class="header-section-number">2</span>' in page
    assert ('the chart is <a href="#fig-small">Figure 1</a>, in '
            '<a href="#sec-second">Section 2</a>.') in page
    figure = page.split('<figure class="tcpl-figure" id="fig-small">')[1].split("</figure>")[0]
    assert 'aria-label="Two dots rising to the right"' in figure and 'role="img"' in figure
    assert "<figcaption>Figure 1: Two &lt;points&gt;</figcaption>" in figure


def test_small_qmd_page_is_offline(small_page):
    assert render.external_references(small_page) == []
    scripts = re.findall(r"<script\b[^>]*>", small_page)
    assert scripts and all('type="application/json"' in s for s in scripts)  # specs only
    assert "require.js" not in small_page and "mathjax" not in small_page.lower()


def test_toc_links_every_section(small_page):
    nav = small_page.split('<nav id="TOC">')[1].split("</nav>")[0]
    assert 'href="#sec-first"' in nav and 'href="#sec-second"' in nav


def test_external_references_are_found():
    bad = ('<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
           '<link rel="stylesheet" href="//fonts.googleapis.com/css">'
           "<style>@import url(https://x/y.css)</style>")
    assert len(render.external_references(bad)) == 4
    with pytest.raises(RuntimeError, match="load resources"):
        render.check_offline(bad)
    assert render.external_references('<a href="https://example.org">a link</a>') == []


def test_failing_cell_fails_the_render(tmp_path):
    (tmp_path / "bad.qmd").write_text("```{python}\n1 / 0\n```\n")
    with pytest.raises(Exception, match="ZeroDivisionError"):
        render.render_with_nbconvert(tmp_path / "bad.qmd", tmp_path)


# --- helpers the .qmd uses --------------------------------------------------------------------

def test_copy_dataset_fills_gaps_and_deletes_only_what_it_wrote(tmp_path):
    src = tmp_path / "ds"
    src.mkdir()
    pl.DataFrame({"run_id": ["a"], "status": ["ok"]}).write_parquet(src / "runs.parquet")
    pl.DataFrame({"x": [1]}).write_parquet(src / "extra.parquet")
    data = tmp_path / "out" / "data"
    data.mkdir(parents=True)
    pl.DataFrame({"x": [1]}).write_parquet(data / "theirs.parquet")
    render.copy_dataset(src, data)
    tables = sorted(f"{name}.parquet" for name in dataset.TABLE_NAMES)
    assert sorted(p.name for p in data.glob("*.parquet")) == sorted(
        [*tables, "extra.parquet", "theirs.parquet"])
    assert pl.read_parquet(data / "clients.parquet").is_empty()
    (src / "extra.parquet").unlink()  # the next copy drops its own stale copy, not theirs
    render.copy_dataset(src, data)
    assert sorted(p.name for p in data.glob("*.parquet")) == sorted([*tables, "theirs.parquet"])


def test_load_dataset_adds_missing_columns(tmp_path):
    pl.DataFrame({"run_id": ["a"], "status": ["ok"]}).write_parquet(tmp_path / "runs.parquet")
    ds = render.load_dataset(tmp_path)
    assert ds["runs"]["predicted_limit"].to_list() == [None]
    assert ds["series"].is_empty() and "connect_latency_s" in ds["series"].columns


def test_html_table_escapes_and_formats():
    page = render.html_table(pl.DataFrame({"name": ["<b>"], "n": [28232], "x": [None]}))
    assert "&lt;b&gt;" in page and ">28,232<" in page and 'class="num"' in page and "–" in page
    raw = render.html_table(pl.DataFrame({"h": ["<i>x</i>"]}), raw={"h"})
    assert "<i>x</i>" in raw


# --- the report itself ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    index = render.render_report(synthetic_dataset(tmp / "dataset"), tmp / "out", REPORT,
                                 engine="nbconvert")
    return index


def test_report_names_every_run_and_section(full_report):
    assert full_report.name == "index.html"
    assert_report(full_report.parent, RUN_IDS, browser=False)
    page = full_report.read_text()
    sections = ["question", "environment", "seed", "ports", "outcomes", "model", "latency",
                "server", "fourtuple", "book", "rerun", "million", "churn", "nat", "servers", "tuning",
                "conclusion", "reproduce"]
    for n, name in enumerate(sections, 1):  # numbered as Quarto numbers them
        assert f'<h2 id="sec-{name}"><span class="header-section-number">{n}</span>' in page
    assert '(<a href="#sec-model">Section 6</a>)' in page  # @sec-model in the prose
    assert page.count('class="tcpl-chart"') == 5
    assert "28,231" in page and "64,511" in page           # the seed, one held port short
    assert "engine allows nofile up to 20000" in page     # unsupported reason
    assert "broken-server/compose.yml" in page             # how to rerun by hand
    assert "Points beyond the tolerance (1)" in page and "short-timeout" in page
    assert "read_parquet" in page                          # the one shown code cell
    assert "charts.use_offline_renderer" not in page       # setup code hidden
    # Explanations are the model's; the engine's stored notes are not shown. Every point's
    # prediction counts its held ports, so the second prediction column is left out.
    assert "engine's notes" not in page and "<th class=\"num\">with held ports" not in page
    assert "already counts the ports its clients found held" in page


@pytest.mark.parametrize("kind,says", [
    ("empty", "This dataset has no runs at all"),
    ("failed", "No point finished"),
])
def test_report_without_finished_runs_says_so(tmp_path, kind, says):
    index = render.render_report(synthetic_dataset(tmp_path / "ds", kind), tmp_path / "out",
                                 REPORT, engine="nbconvert")
    page = index.read_text()
    assert says in page
    assert 'class="tcpl-chart"' not in page
    assert render.external_references(page) == []


@pytest.mark.skipif(render.quarto_version() < render.QUARTO_MIN,
                    reason="Quarto >= 1.4 not installed")
def test_quarto_renders_the_same_source(tmp_path):
    index = render.render_report(synthetic_dataset(tmp_path / "ds"), tmp_path / "out", REPORT,
                                 engine="quarto")
    assert_report(index.parent, RUN_IDS, browser=False)


def test_auto_engine_without_quarto_uses_nbconvert(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert render.quarto_version() == ()
    (tmp_path / "r.qmd").write_text("## Only\n\n```{python}\nprint('ran-here')\n```\n")
    index = render.render_report(synthetic_dataset(tmp_path / "ds", "empty"), tmp_path / "out",
                                 tmp_path / "r.qmd")
    assert "ran-here" in index.read_text()


def test_a_hanging_quarto_is_stopped(tmp_path, monkeypatch):
    import os
    import subprocess

    fake = tmp_path / "bin" / "quarto"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexec sleep 300\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    source = tmp_path / "r.qmd"
    source.write_text("# r\n")
    with pytest.raises(subprocess.TimeoutExpired):
        render.render_with_quarto(source, tmp_path, timeout=1)
