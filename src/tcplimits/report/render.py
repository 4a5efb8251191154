"""Render report.qmd (beside this module) into one offline HTML file, with Quarto or without it.

Where Quarto (>= 1.4) is installed it renders the .qmd unchanged. Elsewhere the same file
goes through a small adapter: the YAML front matter is split off, ```{python} fences become
```python so jupytext's Markdown reader makes them code cells, and Quarto's ``#|`` cell
options become notebook tags; nbclient executes the notebook, nbconvert exports it with the
template in ``report/template/`` (no script, style or font from a CDN; code hidden where the
.qmd says ``echo: false``). Charts are inline SVG with their specs, redrawn interactive by
the script ``embed.add_page_script`` inlines once in the finished page (either engine).

Also here: reading the dataset and showing a table (the report's sections use them). The
check of the finished page in a browser is in report/browser.py.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from tcplimits.report import crossref, downloads, embed
from tcplimits.results import dataset
from tcplimits.results import write_parquet, write_text

DATA_ENV = "TCPLIMITS_DATASET"
# The sweep's config as Snakemake was given it (the reproduce box's command); its copy is
# CONFIG_COPY beside the page.
CONFIG_ENV = "TCPLIMITS_CONFIGFILE"
CONFIG_COPY = "config.yaml"
# The checkout's config/ folder (beside the .qmd's report/): the report names the config that
# runs a point it lacks.
CONFIGS_ENV = "TCPLIMITS_CONFIGS"
TEMPLATE_DIR = Path(__file__).parent / "template"
# The report's source and Quarto's settings beside it ship with the package (package data), so
# `tcplimits report` works from any directory and from an installed tcplimits.
REPORT_SOURCE = Path(__file__).parent / "report.qmd"
QUARTO_SETTINGS = REPORT_SOURCE.parent / "_quarto.yml"
QUARTO_MIN = (1, 4)


# --- The dataset, as the report reads it --------------------------------------------------------

def load_dataset(data_dir: str | Path) -> dict[str, pl.DataFrame]:
    """The four tables; a missing file is an empty table, a missing column a null column."""
    out = {}
    for name in dataset.TABLE_NAMES:
        path = Path(data_dir) / f"{name}.parquet"
        schema = dataset.SCHEMAS[name]
        out[name] = (dataset.conform(pl.read_parquet(path), schema) if path.exists()
                     else pl.DataFrame(schema=schema))
    return out


def copy_dataset(dataset_dir: Path, data_dir: Path) -> Path:
    """Copy the dataset's Parquet files into ``data_dir``, each written atomically. A table
    the dataset lacks is written empty. What an earlier copy wrote and this one does not is
    removed, and only that: the copies are listed in ``data_dir/.tcplimits-copied``, so a
    file someone else put in ``data_dir`` is never deleted."""
    manifest = data_dir / ".tcplimits-copied"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        before = set(manifest.read_text().split())
    except OSError:
        before = set()
    sources = {p.name: p for p in sorted(Path(dataset_dir).glob("*.parquet"))}
    written = set(sources)
    for name in dataset.TABLE_NAMES:
        if f"{name}.parquet" not in sources:
            write_parquet(pl.DataFrame(schema=dataset.SCHEMAS[name]), data_dir / f"{name}.parquet")
            written.add(f"{name}.parquet")
    for name, path in sources.items():
        write_parquet(pl.read_parquet(path), data_dir / name)
    write_text("".join(f"{name}\n" for name in sorted(written)), manifest)
    for stale in sorted(before - written):
        if Path(stale).name == stale and stale.endswith(".parquet"):  # a plain name of ours
            (data_dir / stale).unlink(missing_ok=True)
    return data_dir


def comparison_frame(comparisons: Iterable[Any]) -> pl.DataFrame:
    """model.Comparison objects -> one row each (errnos and explanations as text)."""
    rows = []
    for c in comparisons:
        d = c.to_dict()
        d["errnos"] = ", ".join(f"{k} x{v}" if v > 1 else k for k, v in d["errnos"].items())
        d["explanations"] = list(d["explanations"])
        rows.append(d)
    schema = {"run_id": pl.Utf8, "observed": pl.Int64, "predicted": pl.Int64,
              "expected": pl.Int64, "limit": pl.Utf8, "expected_errno": pl.Utf8,
              "errnos": pl.Utf8, "server_accepted": pl.Int64,
              "explanations": pl.List(pl.Utf8), "deviation": pl.Int64, "tolerance": pl.Int64,
              "within_tolerance": pl.Boolean}
    return pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)


def fmt(value: Any) -> str:
    """A cell's text: thousands separators, short floats, lists joined, a dash for null."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


RUN_ID_COLUMN = "run id"


def html_table(df: pl.DataFrame, *, raw: Iterable[str] = (), classes: str = "",
               header: bool = True) -> str:
    """A plain HTML table (numbers right-aligned); columns in ``raw`` hold HTML already."""
    raw = set(raw)
    numeric = {c for c, t in df.schema.items() if t.is_numeric()}
    # the run id, kept in a last column beside a point's name: small, broken anywhere
    cls = {c: "num" if c in numeric else "runid" if c == RUN_ID_COLUMN else "" for c in df.columns}
    head = "".join(f'<th class="{cls[c]}">{html.escape(c)}</th>' for c in df.columns)
    head = f"<thead><tr>{head}</tr></thead>" if header else ""
    body = []
    for row in df.iter_rows(named=True):
        cells = []
        for c, v in row.items():
            text = str(v or "") if c in raw else html.escape(fmt(v))
            cells.append(f'<td class="{cls[c]}">{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="tcpl-table {classes}">{head}'
            f'<tbody>{"".join(body)}</tbody></table></div>')


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|@~$])")


def md_escape(text: Any) -> str:
    """Text from data, safe in Markdown: every character Markdown (or a cross-reference)
    could read as syntax backslash-escaped, newlines as spaces."""
    return _MD_SPECIAL.sub(r"\\\1", fmt(text)).replace("\n", " ")


def markdown_table(df: pl.DataFrame, *, raw: Iterable[str] = ()) -> str:
    """A pipe table (numbers right-aligned); cells escaped, except in the ``raw`` columns,
    which hold Markdown already (an ``@sec-`` reference that Quarto and the fallback
    renderer both resolve)."""
    raw = set(raw)
    numeric = {c for c, t in df.schema.items() if t.is_numeric()}
    head = "| " + " | ".join(md_escape(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---:" if c in numeric else ":---" for c in df.columns) + "|"
    body = ["| " + " | ".join(str(v or "") if c in raw else md_escape(v)
                              for c, v in row.items()) + " |"
            for row in df.iter_rows(named=True)]
    return "\n".join([head, rule, *body])


def html_list(items: Iterable[str], cls: str = "") -> str:
    items = [f"<li>{html.escape(i)}</li>" for i in items if i]
    return f'<ul class="{cls}">{"".join(items)}</ul>' if items else ""


# --- Rendering ------------------------------------------------------------------------------------

def render_report(dataset_dir: Path, out_dir: Path, source: Path,
                  *, engine: str = "auto", config: Path | None = None) -> Path:
    """Copy the dataset to ``out_dir/data/`` (with a CSV of each table and the data
    dictionary beside them) and render ``source`` to ``out_dir/index.html``.

    engine: "quarto", "nbconvert", or "auto" (Quarto when a recent one is on PATH).
    config: the sweep's config file, copied to ``out_dir/config.yaml``; the page names it."""
    out_dir, source = Path(out_dir), Path(source)
    env = {}
    # the folder of the sweep's configs, to name the one that runs a point the page lacks: the
    # config's own folder, else config/ where tcplimits runs (the checkout)
    configs = Path(config).resolve().parent if config is not None else Path.cwd() / "config"
    if configs.is_dir():
        env[CONFIGS_ENV] = str(configs)
    if config is not None:
        write_text(Path(config).read_text(), out_dir / CONFIG_COPY)
        env[CONFIG_ENV] = str(config)
    data_dir = copy_dataset(Path(dataset_dir), out_dir / "data").resolve()
    downloads.write_csvs(data_dir)
    if engine == "auto":
        engine = "quarto" if quarto_version() >= QUARTO_MIN else "nbconvert"
    if engine not in ("quarto", "nbconvert"):
        raise ValueError(f"engine {engine!r}: use 'quarto', 'nbconvert' or 'auto'")
    if engine == "quarto":
        page = embed.add_page_script(render_with_quarto(source, data_dir, env))
        # Quarto's own page is not ours to fix: say what it references, do not fail.
        for ref in external_references(page):
            print(f"tcplimits report: warning: the page references {ref!r}", file=sys.stderr)
    else:
        page = embed.add_page_script(render_with_nbconvert(source, data_dir, env=env))
        check_offline(page)
    target = out_dir / "index.html"
    write_text(page, target)
    return target


def quarto_version() -> tuple[int, ...]:
    """(major, minor) of the quarto on PATH, () when there is none."""
    exe = shutil.which("quarto")
    if not exe:
        return ()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60).stdout
    return tuple(int(n) for n in re.findall(r"\d+", out)[:2])


def render_with_quarto(source: Path, data_dir: Path, env: dict[str, str] | None = None, *,
                       timeout: int = 1800) -> str:
    """`quarto render` (settings from the _quarto.yml beside the source), the dataset passed
    in DATA_ENV; stopped after ``timeout`` seconds (subprocess.TimeoutExpired) rather than
    hang. Rendered from a copy in a temporary directory: Quarto writes beside its source, and
    an installed package's directory may not be writable."""
    with tempfile.TemporaryDirectory(prefix="tcplimits-quarto-") as tmp:
        work = Path(tmp) / "src"
        work.mkdir()
        shutil.copy(source, work / source.name)
        if (source.parent / "_quarto.yml").exists():
            shutil.copy(source.parent / "_quarto.yml", work / "_quarto.yml")
        copy = work / source.name
        subprocess.run(["quarto", "render", str(copy), "--to", "html", "--output-dir", tmp,
                        "--execute-dir", str(Path(data_dir).resolve().parent)],
                       check=True, env={**os.environ, **(env or {}), DATA_ENV: str(data_dir)},
                       timeout=timeout)
        # --output-dir is honoured for projects; a lone file may still land beside its source.
        for page in (Path(tmp) / f"{source.stem}.html", copy.with_suffix(".html")):
            if page.exists():
                text = page.read_text()
                page.unlink()
                return text
        raise FileNotFoundError(f"quarto render wrote no {source.stem}.html")


def render_with_nbconvert(source: Path, data_dir: Path, *, timeout: int = 600,
                          env: dict[str, str] | None = None) -> str:
    nb = qmd_to_notebook(source.read_text(), project=_project_options(source))
    # Cells run in the report's folder, as a reader's code beside the page would: data/ is there.
    execute_notebook(nb, cwd=Path(data_dir).resolve().parent,
                     env={**(env or {}), DATA_ENV: str(data_dir)},
                     timeout=timeout)
    crossref.resolve_outputs(nb)
    return notebook_to_html(nb)


def _project_options(source: Path) -> dict:
    import yaml

    path = source.parent / "_quarto.yml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


# The adapter: Quarto Markdown -> notebook. Quarto's cell options -> nbconvert/nbclient tags.
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*\n", re.S)
_FENCE = re.compile(r"^(?P<ticks>`{3,})\s*(?P<info>.*?)\s*$")
_OPTION = re.compile(r"^#\|\s?(.*)$")
TAGS = {("echo", False): "remove_input", ("include", False): "remove_cell",
        ("output", False): "remove_output", ("eval", False): "skip-execution"}


def split_front_matter(text: str) -> tuple[dict, str]:
    import yaml

    m = _FRONT_MATTER.match(text)
    if not m:
        return {}, text
    return yaml.safe_load(m.group(1)) or {}, text[m.end():]


def _rewrite_fences(body: str) -> str:
    """```{python} -> ```python (a code cell); any other opening fence -> ```{.lang}, which
    jupytext leaves in Markdown (Quarto does not run ```bash either); outside fences as is."""
    lines, closing = [], None
    for line in body.split("\n"):
        m = _FENCE.match(line)
        if closing is not None:  # inside a fenced block
            if m and not m["info"] and len(m["ticks"]) >= len(closing):
                closing = None
        elif m:
            closing, info = m["ticks"], m["info"]
            if re.fullmatch(r"\{python[^}]*\}", info):
                line = f"{m['ticks']}python"
            elif re.fullmatch(r"[\w+-]+", info):
                line = f"{m['ticks']}{{.{info}}}"
        lines.append(line)
    return "\n".join(lines)


def _restore_fences(markdown: str) -> str:
    return re.sub(r"^(`{3,})\{\.([\w+-]+)\}\s*$", r"\1\2", markdown, flags=re.M)


def cell_options(source: str) -> tuple[dict, str]:
    """Quarto's leading ``#| key: value`` lines -> (options, the code without them)."""
    import yaml

    lines = source.split("\n")
    n = 0
    while n < len(lines) and _OPTION.match(lines[n]):
        n += 1
    options = yaml.safe_load("\n".join(_OPTION.match(line)[1] for line in lines[:n])) or {}
    return options, "\n".join(lines[n:]).lstrip("\n")


def qmd_to_notebook(text: str, project: dict | None = None):
    """Quarto Markdown -> an nbformat v4 notebook, with ``#|`` options as tags."""
    import jupytext
    import nbformat

    front, body = split_front_matter(text)
    defaults = {**((project or {}).get("execute") or {}), **(front.get("execute") or {})}
    # Quarto's own reader (jupytext's "quarto" format) needs the quarto binary: read it as
    # plain Markdown, named explicitly so that `:::` divs are not taken for pandoc's.
    nb = jupytext.reads(_rewrite_fences(body),
                        fmt={"extension": ".md", "format_name": "markdown"})
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = _restore_fences(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        options, cell.source = cell_options(cell.source)
        options = {**defaults, **options}
        tags = [tag for (key, value), tag in TAGS.items() if options.get(key) is value]
        cell.metadata = {"tags": tags, "quarto": options} if tags else {"quarto": options}
    numbers = crossref.number_notebook(nb, number_sections=bool(
        _html_option("number-sections", front, project or {})))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                  "language": "python"},
                   "language_info": {"name": "python"},
                   "title": str(front.get("title", "Report")),
                   "subtitle": str(front.get("subtitle", "")),
                   "tcplimits": {"sections": numbers.sections, "figures": numbers.figures}}
    nbformat.validate(nb)
    return nb


def _html_option(key: str, front: dict, project: dict):
    """An HTML format option as Quarto resolves it: the document's front matter (top level
    or format.html) over the project's _quarto.yml."""
    for source in (front, project):
        html_format = ((source.get("format") or {}).get("html") or {})
        if isinstance(html_format, dict) and key in html_format:
            return html_format[key]
        if key in source:
            return source[key]
    return None


def execute_notebook(nb, *, cwd: Path, env: dict[str, str], timeout: int = 600):
    """Run every cell in a fresh python3 kernel (in ``cwd``, with ``env`` added)."""
    from nbclient import NotebookClient

    # The kernel's own log only warns that its local TCP transport is not encrypted; cell
    # errors come back through the protocol and still fail the render.
    client = NotebookClient(nb, kernel_name="python3", timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}},
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])
    client.execute(env={**os.environ, **env})
    for cell in nb.cells:  # Quarto's `output: asis`: printed text is Markdown
        if cell.get("metadata", {}).get("quarto", {}).get("output") == "asis":
            cell.outputs = [{"output_type": "display_data", "metadata": {},
                             "data": {"text/markdown": o["text"]}}
                            if o.get("output_type") == "stream" and o.get("name") == "stdout"
                            else o for o in cell.outputs]
    return nb


def notebook_to_html(nb) -> str:
    """Export with the offline template; drop hidden inputs, cells and outputs; add a TOC."""
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    config = Config()
    config.TagRemovePreprocessor.enabled = True
    config.TagRemovePreprocessor.remove_input_tags = {"remove_input"}
    config.TagRemovePreprocessor.remove_cell_tags = {"remove_cell"}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {"remove_output"}
    exporter = HTMLExporter(config=config, template_name=TEMPLATE_DIR.name,
                            extra_template_basedirs=[str(TEMPLATE_DIR.parent)],
                            exclude_input_prompt=True, exclude_output_prompt=True,
                            anchor_link_text="#")
    body, _ = exporter.from_notebook_node(nb)
    return add_toc(crossref.heading_ids(body))


_H2 = re.compile(r'<h2 id="([^"]+)">(.*?)<a class="anchor-link"', re.S)


def add_toc(page: str) -> str:
    """Fill the template's <!-- toc --> marker with links to the page's h2 sections."""
    links = "".join(f'<li><a href="#{anchor}">{title.strip()}</a></li>'
                    for anchor, title in _H2.findall(page))
    nav = f'<nav id="TOC"><h2 class="toc-title">Contents</h2><ul>{links}</ul></nav>'
    return page.replace("<!-- toc -->", nav if links else "", 1)


# A src/href that is neither inline data nor an anchor makes the page depend on another file
# or host; so do CSS url()s and @imports that leave the page.
_EXTERNAL = [
    re.compile(r"<(?:script|img|iframe|source|video|audio|embed)\b[^>]*?\bsrc\s*=\s*"
               r"[\"']?(?!data:|#)[^\"'\s>]+", re.I),
    re.compile(r"<link\b[^>]*?\bhref\s*=\s*[\"']?(?!data:|#)[^\"'\s>]+", re.I),
    re.compile(r"url\(\s*[\"']?(?:https?:)?//[^)]*", re.I),
    re.compile(r"@import\b[^;]*", re.I),
]


def external_references(page: str) -> list[str]:
    """Anything in the page that a browser would fetch from elsewhere (the chart bundle's
    own text aside: the browser check sees what it does)."""
    page = embed.without_page_script(page)
    return [m.group(0) for pattern in _EXTERNAL for m in pattern.finditer(page)]


def check_offline(page: str) -> None:
    found = external_references(page)
    if found:
        raise RuntimeError(f"the report would load resources from elsewhere: {found[:5]}")
