"""Strings from the data are shown, never run (issue 20): a corpus of hostile strings placed
in the free-text columns a run directory can carry (an agent's error and message, a run's
reason and noisy reason, the env strings, a real server's messages) reaches the page as text."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import polars as pl
import pytest

from tcplimits.report import browser, findings, render
from tcplimits.report.blocks import Blocks, safe_markdown
from tests.report.fixtures import browser_available, synthetic_dataset

HOSTILE = [
    '<script>window.pwned=1</script>',
    '<svg onload="window.pwned=2">',
    '<img src=x onerror="window.pwned=3">',
    '"><b onmouseover=alert(1)>x</b>',
    '[click](javascript:alert(4))',
    '\x1b[31mred\x1b[0m\x07',
    'x' * 5000,
]
# Free-text columns (not ids, parameters or errno names, which are checked on the way in).
COLUMNS = {"runs": ["reason", "noisy_reason", "env_kernel", "env_hostname"],
           "clients": ["message", "peer_message"], "server": ["message"]}


def hostile_dataset(out: Path) -> Path:
    synthetic_dataset(out)
    for table, columns in COLUMNS.items():
        path = out / f"{table}.parquet"
        df = pl.read_parquet(path)
        n = df.height
        df = df.with_columns(pl.Series(column, [HOSTILE[i % len(HOSTILE)] for i in range(n)],
                                       dtype=pl.Utf8)
                             for column in columns if column in df.columns)
        if table == "runs":  # every run noisy, so that the reason is shown where it can be
            df = df.with_columns(pl.lit(True).alias("noisy"))
        df.write_parquet(path)
    return out


class _Markup(HTMLParser):
    """Elements and attributes as a browser parses them."""

    def __init__(self):
        super().__init__()
        self.live: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and not (attrs.get("id") == "tcplimits-vega"
                                    or "tcpl-spec" in (attrs.get("class") or "")):
            self.live.append(f"<script {attrs}>")
        self.live += [f"<{tag} {name}=...>" for name, value in attrs.items()
                      if name.startswith("on")
                      or (value or "").strip().lower().startswith("javascript:")]


def _live(html: str) -> list[str]:
    """Markup in ``html`` that would run: script elements but ours, on* handlers,
    javascript: links."""
    parser = _Markup()
    parser.feed(html)
    return parser.live


@pytest.mark.parametrize("text", HOSTILE)
def test_safe_markdown_leaves_no_tag_or_script_link(text):
    shown = safe_markdown(f"the run said {text}.")
    assert not re.search(r"<(?!/?(strong|em|code|span|div|p|br)\b)", shown)
    assert "(javascript:" not in shown


def test_the_report_s_own_tags_stay():
    text = '<div class="tcpl-box key-findings">\n\n**x** <strong>1</strong> <span class="bad">no</span></div>'
    assert safe_markdown(text) == text
    assert safe_markdown('<div class="x" onclick="y">') == '&lt;div class="x" onclick="y">'


def test_every_block_of_the_report_shows_hostile_strings_as_text(tmp_path):
    d = findings.load(hostile_dataset(tmp_path / "dataset"))
    for name in findings.__all__:
        call = getattr(findings, name)
        if name in ("Data", "load", "sweep_summary") or not callable(call):
            continue
        if name == "model_terms":  # a function of no data
            blocks = call()
        elif name == "reproduce":
            blocks = call(d, tmp_path / "dataset")
        else:
            blocks = call(d)
        assert isinstance(blocks, Blocks), name
        for kind, item in blocks:
            if kind in ("markdown", "html"):
                assert not _live(item), (name, _live(item))


@pytest.mark.browser
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
def test_the_page_runs_no_script_it_did_not_put_there(tmp_path):
    out = tmp_path / "report"
    page = render.render_report(hostile_dataset(tmp_path / "dataset"), out, render.REPORT_SOURCE)
    html = Path(page).read_text()
    assert not _live(html), _live(html)
    assert browser.check_in_browser(page, out / "screenshot.png") == []


@pytest.mark.browser
@pytest.mark.skipif(browser_available() is not None, reason=str(browser_available()))
def test_the_browser_check_fails_a_page_with_a_foreign_script(tmp_path):
    page = tmp_path / "foreign.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><script>window.x=1</script>'
                    '<img src="data:," onerror="window.y=1"></body></html>')
    problems = browser.check_in_browser(page, tmp_path / "shot.png")
    assert sum("did not put there" in p for p in problems) == 2, problems
