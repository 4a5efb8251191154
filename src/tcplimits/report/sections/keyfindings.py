"""Key findings, under the title: the answer the data gives, one line each, every line
linking to the section with its evidence (``@sec-`` references, resolved by Quarto and by the
fallback renderer alike). Every number is one the sections state."""

from __future__ import annotations

from tcplimits import model
from tcplimits.report import render
from tcplimits.report.blocks import Blocks, plural
from tcplimits.report.data import Data, agreement_counts, most_accepted, status_counts
from tcplimits.report.sections.churn import churn_counts, churn_points
from tcplimits.results import STATUS_OK

# Where each limiting term's points are shown.
LIMIT_SECTIONS = {model.PORTS: "@sec-ports", model.DESCRIPTORS: "@sec-outcomes",
                  model.SERVER: "@sec-server", model.CONNTRACK: "@sec-million",
                  model.MAX_CONNECTIONS: "@sec-outcomes"}


def lines(d: Data) -> list[str]:
    """The findings, Markdown, one a line."""
    if d.every.is_empty():
        return ["This dataset has no runs at all: run the workflow (`snakemake --cores 4`) to "
                "fill it (@sec-reproduce)."]
    counts = status_counts(d.every)
    missing = d.every.height - counts[STATUS_OK]
    said = [f"**{plural(d.every.height, 'point')}** ran, {counts[STATUS_OK]:,} to their end"
            + (f"; {missing:,} produced no measurement (@sec-rerun)" if missing else "") + "."]
    if d.comparisons:
        a = agreement_counts(d.comparisons)
        said.append(f"**The model predicted {a.within:,} of {plural(a.points, 'point')}** that "
                    f"hold connections within tolerance, {a.exact:,} exactly (@sec-model).")
        said.append("What bounded them: " + ", ".join(
            f"{limit} at {plural(n, 'point')} ({LIMIT_SECTIONS.get(limit, '@sec-model')})"
            for limit, n in a.limits.items()) + ".")
    best = most_accepted(d.runs)
    if best:
        said.append(f"**The most one server held: {best['server_accepted']:,} connections** on "
                    f"one listening port, from {plural(best['clients'], 'client container')} "
                    f"(*{render.md_escape(d.name(best['run_id']))}*; @sec-server).")
    points = churn_points(d.churn_runs, d.labels)
    if not points.is_empty():
        c = churn_counts(points)
        fastest = points["sustained"].max()
        said.append(f"**Churn:** {c['agree']:,} of {plural(c['points'], 'churn point')} ended as "
                    f"the model said; the fastest sustained {fastest or 0:,.0f} connections per "
                    "second (@sec-churn).")
    said.append("Every setting that bounds a result, side by side: @sec-tuning. The data, the "
                "config and the command behind this page: @sec-reproduce.")
    return said


def key_findings(d: Data) -> Blocks:
    """The box under the title."""
    items = "\n".join(f"- {line}" for line in lines(d))
    return Blocks().md(f'<div class="tcpl-box key-findings">\n\n**Key findings**\n\n{items}\n\n'
                       "</div>")
