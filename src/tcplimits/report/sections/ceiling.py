"""The report's "One host, one million", the ceiling rung (issue 22; pure functions of the
dataset's runs table): the host's predicted ceiling each such run resolved where it ran
(run.json "ceiling", the dataset's ceiling column), what it held, and the rung against every
limit; and the connect rate rung by rung. The arithmetic is tcplimits.model.ceiling's, recorded
with the run; nothing here computes a limit.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from typing import Any

import polars as pl

from tcplimits.model import ceiling as model
from tcplimits.report import render
from tcplimits.report.blocks import plural

REACH = {model.STOPS: "ends the run ({errno})", model.REFUSED: "never reached: held below it"}


def resolution(run: Mapping[str, Any]) -> dict[str, Any] | None:
    """run.json's ceiling block of a run (the dataset's ceiling column, JSON), or None."""
    value = run.get("ceiling")
    return json.loads(value) if isinstance(value, str) and value else None


def ceiling_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs that asked for the host's ceiling (connections: ceiling)."""
    if runs.is_empty() or "ceiling" not in runs.columns:
        return runs.clear()
    asked = [(resolution(r) or {}).get("asked") == model.CEILING
             for r in runs.iter_rows(named=True)]
    return runs.filter(pl.Series(asked, dtype=pl.Boolean))


def ceiling_sentence(run: Mapping[str, Any]) -> str:
    """What the rung was predicted to hold, what bound it and what it held."""
    res = resolution(run) or {}
    pred = res.get("predicted") or {}
    binding, nxt = pred.get("binding") or {}, pred.get("next")
    text = (f"The ceiling rung ({run['network']}, {plural(run['clients'], 'client container')}"
            f" x {plural(run['procs'], 'process')}) asked for the host's ceiling where it ran: "
            f"**{res.get('connections') or 0:,}** connections, bound by "
            f"`{binding.get('name')}` ({binding.get('value') or 0:,} here)")
    if nxt:
        text += (f"; the next limit, `{nxt['name']}`, would allow {nxt['connections']:,} "
                 f"({pred.get('margin') or 0:+,})")
    text += ". "
    held = run.get("connections_total")
    if run.get("status") != "ok" or held is None:
        return text + f"It did not finish: {run.get('status')}, {run.get('reason') or ''}."
    share = (f"each client process stopped at its share, {res.get('per_process'):,}, so that "
             "the run never reaches the host's limit" if res.get("held_by") == "share" else
             f"the limit itself ended it, as predicted ({binding.get('errno')})")
    text += (f"It held **{held:,}** ({held / res['connections']:.2%} of the ceiling): {share}")
    if run.get("connect_s"):
        text += f"; connected in {run['connect_s']:.1f} s ({held / run['connect_s']:,.0f}/s)"
    return text + "."


def bounds_table(run: Mapping[str, Any]) -> pl.DataFrame:
    """The ceiling rung against every limit, smallest first."""
    res = resolution(run) or {}
    held = run.get("connections_total")
    rows = [{"limit": b["name"], "value here": b["value"],
             "allows (connections)": b["connections"],
             "held / allowed": f"{held / b['connections']:.1%}" if held and b["connections"]
             else None,
             "when reached": REACH[b["reach"]].format(errno=b["errno"]),
             "how to raise it": b["raise_with"], "counted as": b["why"]}
            for b in (res.get("predicted") or {}).get("bounds", [])]
    return pl.DataFrame(rows) if rows else pl.DataFrame()


def ceiling_rules(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ceiling's bounds as the chart's rules ({"limit", "connections"})."""
    res = resolution(run) or {}
    return [{"limit": b["name"], "connections": b["connections"]}
            for b in (res.get("predicted") or {}).get("bounds", [])]


def rate_sentence(ladder: pl.DataFrame) -> str | None:
    """The connect rate of the top loopback rung against the median of the other loopback
    rungs of ``ladder`` (the section's runs), from the runs' own times."""
    ladder = ladder.filter((pl.col("status") == "ok") & pl.col("connect_s").is_not_null()
                           & (pl.col("connections_total") > 0)
                           & (pl.col("network") == "loopback"))
    if ladder.height < 2:
        return None
    rows = ladder.sort("connections_total").to_dicts()
    rate = [r["connections_total"] / r["connect_s"] for r in rows]
    top, rest = rows[-1], statistics.median(rate[:-1])
    steps = ", ".join(f"{r['connections_total']:,}: {x:,.0f}/s" for r, x in zip(rows, rate))
    # why the top rung's times are suspect (the run's own words: e.g. the SYNs its server
    # dropped at a full accept queue, each a connect() waiting a 1 s retransmit)
    why = f": {render.md_escape(top['noisy_reason'])}" if top.get("noisy_reason") else ""
    return (f"Connect rate on loopback, rung by rung ({steps}): the top rung connected at "
            f"{rate[-1] / rest:.2f}x the median of the others"
            + (f" (its times are marked suspect{why})" if top.get("noisy") else "") + ".")
