"""What a report cell shows (``Blocks``) and the few ways the report words a count.

Every section function returns ``Blocks``; ``plural``, ``number`` and ``bullets`` are the
report's one way of putting a count, a measured number or a list into a sentence (``plural``
is the model's, ``tcplimits.model.plural``, so that the model's and the report's sentences
count alike).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import polars as pl

from tcplimits.model import plural
from tcplimits.report import render

__all__ = ["Blocks", "bullets", "number", "plural", "safe_markdown"]


# The tags the report's own Markdown uses: plain, or with a class of words. Anything else that
# looks like a tag (a <script>, an <svg onload=…>, a tag with any other attribute) is escaped.
_OWN_TAG = re.compile(r'</?(strong|em|code|span|div|p|br)( class="[\w -]*")?\s*/?>')
# A link whose target runs code when followed.
_SCRIPT_LINK = re.compile(r"\]\(\s*(javascript|vbscript|data):", re.I)


def safe_markdown(text: str) -> str:
    """``text`` with every "<" that does not open one of the report's own plain tags written
    as "&lt;", and links to javascript:/vbscript:/data: URLs disarmed: data strings in a
    sentence are shown, never run."""
    out, at = [], 0
    for lt in re.finditer("<", text):
        if lt.start() < at:
            continue
        tag = _OWN_TAG.match(text, lt.start())
        out.append(text[at:lt.start()])
        if tag:
            out.append(tag.group(0))
            at = tag.end()
        else:
            out.append("&lt;")
            at = lt.end()
    out.append(text[at:])
    return _SCRIPT_LINK.sub("](#", "".join(out))


class Blocks(list):
    """What one report cell shows, in order: ("markdown" | "html", text) or ("chart", chart).

    Jupyter displays it as the cell's value (``_ipython_display_``), so a cell is one call."""

    def md(self, text: str) -> "Blocks":
        """Markdown, with any raw HTML in it shown as text but for the few plain tags the
        report writes itself (``safe_markdown``): sentences carry strings from the data (an
        agent's error message, a noisy reason), and Markdown passes raw HTML through."""
        self.append(("markdown", safe_markdown(text)))
        return self

    def html(self, text: str) -> "Blocks":
        self.append(("html", text))
        return self

    def table(self, df: pl.DataFrame, **options) -> "Blocks":
        return self.html(render.html_table(df, **options))

    def chart(self, chart: Any) -> "Blocks":
        self.append(("chart", chart))
        return self

    def text(self) -> str:
        """The Markdown and HTML, one block a line (charts left out): for tests and reading."""
        return "\n".join(item for kind, item in self if kind != "chart")

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self]

    def words(self) -> "Blocks":
        """Everything but the charts: a section's prose and tables, for the cell before its
        figure (a cell whose output is the chart alone can be a numbered, captioned figure)."""
        return Blocks(item for item in self if item[0] != "chart")

    def figure(self) -> "Blocks":
        """The charts alone: the cell under ``#| label: fig-…`` and ``fig-cap``."""
        return Blocks(item for item in self if item[0] == "chart")

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, Markdown, display

        for kind, item in self:
            display(Markdown(item) if kind == "markdown" else HTML(item) if kind == "html"
                    else item)


def number(value: float) -> str:
    """A measured number in a sentence: "1,998", or "1,998.5" when it is not whole."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def bullets(items: Iterable[str]) -> str:
    """A Markdown list, one item a line."""
    return "\n".join(f"- {item}" for item in items)
