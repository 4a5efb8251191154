"""What a report cell shows (``Blocks``) and the few ways the report words a count.

Every section function returns ``Blocks``; ``plural``, ``number`` and ``bullets`` are the
report's one way of putting a count, a measured number or a list into a sentence (``plural``
is the model's, ``tcplimits.model.plural``, so that the model's and the report's sentences
count alike).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

from tcplimits.model import plural
from tcplimits.report import render

__all__ = ["Blocks", "bullets", "number", "plural"]


class Blocks(list):
    """What one report cell shows, in order: ("markdown" | "html", text) or ("chart", chart).

    Jupyter displays it as the cell's value (``_ipython_display_``), so a cell is one call."""

    def md(self, text: str) -> "Blocks":
        self.append(("markdown", text))
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
