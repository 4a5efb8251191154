"""Sections 3 to 8, the connections held: the seed reproduced, the port pool, the outcomes,
the model's terms, observed against predicted, connect latency and the server side.

Each section function takes a ``Data`` and returns ``Blocks``; the functions beside them
return the rows or sentences a section is made of. Predictions, tolerances, errno meanings
and the accept queue are tcplimits.model's; port counts tcplimits.config.params'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl

from tcplimits import model
from tcplimits.config.params import KERNEL_DEFAULT_PORT_RANGE, port_count
from tcplimits.report import charts, render
from tcplimits.report.blocks import Blocks, bullets, plural
from tcplimits.report.data import (Data, agreement_counts, by_limit, client_counts,
                                   most_accepted, noisy_runs, pool_fill, server_gaps, span,
                                   values)
from tcplimits.report.sections.fourtuple import BOOK_PORTS, beyond_one_pool

# The seed's claims (the blog post), set against the data.
SEED_RANGE = "{}-{}".format(*KERNEL_DEFAULT_PORT_RANGE)
SEED_PER_CLIENT = 28_232   # the blog's figure at the default range
WIDE_RANGE = "1024-65535"


# --- 3. Headline: the seed, reproduced --------------------------------------------------------

def configs_running(port_range: str) -> list[str]:
    """The checkout's configs (``render.CONFIGS_ENV``) with a point of ``port_range`` that
    holds connections, the smallest sweep first: what fills a row this run set leaves empty."""
    import os
    from pathlib import Path

    from tcplimits.config import grid

    folder = os.environ.get(render.CONFIGS_ENV)
    found = []
    for path in sorted(Path(folder).glob("*.yaml")) if folder else []:
        try:
            ps = grid.points(grid.load_config(path))
        except Exception:  # a config this checkout cannot read names nothing here
            continue
        if any(p.params.port_range == port_range and p.params.mode == "hold" for p in ps):
            found.append((len(ps), f"config/{path.name}"))
    return [name for _, name in sorted(found)]  # the smallest sweep first


def seed_row(d: Data, label: str, port_range: str, blog: str) -> tuple[dict, list[str]]:
    """One row of the seed table: the port-bound finished points of ``port_range``; without
    any, the config that runs one."""
    sel = d.ok.filter((pl.col("port_range") == port_range)
                      & (pl.col("predicted_limit") == model.PORTS))
    ids = sel["run_id"].to_list()
    stops = values(d.clients.filter(pl.col("run_id").is_in(ids)), "error")
    details = ("stopped with " + ", ".join(stops)) if stops else "–"
    if not ids:
        configs = configs_running(port_range)
        details = (f"not in this run set; snakemake --cores 4 --configfile {configs[0]} runs it"
                   if configs else "not in this run set")
    return {"": label, "the blog": blog, "this run set": span(client_counts(d.clients, ids)),
            "points": len(ids), "details": details}, ids


def seed_rows(d: Data) -> tuple[pl.DataFrame, list[str], list[str]]:
    """(the seed table, ids of the default-range points, ids of the wide-range points)."""
    default_row, default_ids = seed_row(d, f"connections per client, range {SEED_RANGE}",
                                        SEED_RANGE, f"{SEED_PER_CLIENT:,}, EADDRNOTAVAIL")
    wide_row, wide_ids = seed_row(d, f"connections per client, range {WIDE_RANGE}", WIDE_RANGE,
                                  "more (shown as a screenshot); the range holds "
                                  f"{port_count(WIDE_RANGE):,}")
    rows = [default_row, wide_row]
    best = most_accepted(d.runs)
    if best:
        rows.append({"": "most connections one server accepted",
                     "the blog": f"{2 * SEED_PER_CLIENT:,} (2 × {SEED_PER_CLIENT:,})",
                     "this run set": render.fmt(best["server_accepted"]), "points": 1,
                     "details": f"{d.name(best['run_id'])}: "
                                f"{plural(best['clients'], 'client container')}, "
                                f"range {best['port_range']}"})
    return pl.DataFrame(rows), default_ids, wide_ids


def seed_headline(d: Data, default_ids: list[str], wide_ids: list[str]) -> str:
    """The headline paragraph (HTML): the default and the wide range against the claims."""
    said = []
    if default_ids:
        got = client_counts(d.clients, default_ids)
        stops = values(d.clients.filter(pl.col("run_id").is_in(default_ids)), "error")
        short = SEED_PER_CLIENT - max(got)
        explained = all(d.by_id[i].observed == d.by_id[i].expected
                        for i in default_ids if i in d.by_id)
        said.append(
            f"At the kernel's default range a client held <strong>{span(got)}</strong> "
            "connections"
            + (" and stopped with EADDRNOTAVAIL"
               if stops == [model.ERRNO_OF_LIMIT[model.PORTS]] else "")
            + (f": exactly the blog's {SEED_PER_CLIENT:,}." if short == 0 else
               f", {plural(short, 'connection')} short of the blog's {SEED_PER_CLIENT:,}"
               + (": ports of the range were already held in each client's namespace (Docker's "
                  "embedded DNS listener holds one), and the model that counts them predicts "
                  "these counts exactly (section 6)." if explained else
                  " (section 6 says why)."))
        )
    else:
        said.append("No port-bound point uses the default range, so the blog's "
                    f"{SEED_PER_CLIENT:,} is not re-measured here.")
    if wide_ids:
        got = client_counts(d.clients, wide_ids)
        book = ("as many as" if max(got) == BOOK_PORTS else
                "more than" if max(got) > BOOK_PORTS else "fewer than")
        said.append(f"With 1024–65535 a client held <strong>{span(got)}</strong>: the range's "
                    f"{port_count(WIDE_RANGE):,} ports minus the ports already held, {book} the "
                    f"{BOOK_PORTS:,} the book gives as a server's ceiling, from one client "
                    "address alone.")
    return '<p class="headline">' + " ".join(said) + "</p>"


def seed(d: Data) -> Blocks:
    out = Blocks()
    if d.ok.is_empty():
        return out.md("No point finished, so there is nothing to set against the blog's numbers.")
    rows, default_ids, wide_ids = seed_rows(d)
    return out.table(rows).html(seed_headline(d, default_ids, wide_ids))


# --- 4. Connections per client against the port range -----------------------------------------

def on_the_line(d: Data) -> str:
    """How many port- and descriptor-bound points held exactly the model's count."""
    said = []
    elsewhere = set(beyond_one_pool(d.ok))  # drawn in section 9, not on this line
    on_line = [c for c in by_limit(d.comparisons, model.PORTS) if c.run_id not in elsewhere]
    fd_bound = [c for c in by_limit(d.comparisons, model.DESCRIPTORS)
                if c.run_id not in elsewhere]
    if on_line:
        said.append(f"Of the {plural(len(on_line), 'port-bound point')}, "
                    f"{sum(c.observed == c.expected for c in on_line):,} held exactly their range "
                    "minus the ports already held: on the line, one port short where Docker's DNS "
                    "listener sits in the range.")
    if fd_bound:
        said.append(f"Of the {plural(len(fd_bound), 'descriptor-bound point')}, "
                    f"{sum(c.observed == c.expected for c in fd_bound):,} held exactly processes × "
                    f"(nofile − {model.CLIENT_BASELINE_FDS}): below the line.")
    return " ".join(said)


def port_pool(d: Data) -> Blocks:
    out = Blocks()
    if d.clients.is_empty():
        return out.md("No client recorded a count.")
    said = on_the_line(d)
    if said:
        out.md(said)
    elsewhere = beyond_one_pool(d.ok)
    if elsewhere:
        out.md(f"Not drawn here: {plural(len(elsewhere), 'point')} whose clients have more than "
               "one pool (several server ports or addresses, or several source addresses), "
               "which hold more than one connection per port; @sec-fourtuple sets them against "
               "their 4-tuple space.")
    clients = d.clients.filter(~pl.col("run_id").is_in(elsewhere))
    if clients.is_empty():
        return out
    return out.chart(charts.connections_vs_range(clients, d.labels))


# --- 5. Outcomes ------------------------------------------------------------------------------

def errno_summary(clients: pl.DataFrame) -> pl.DataFrame:
    """Per errno (or stop reason): what it means, client processes and points that stopped so."""
    summary = (clients.with_columns(pl.col("error").fill_null("none"))
               .group_by("error").agg(processes=pl.len(), points=pl.col("run_id").n_unique())
               .sort("processes", "error", descending=[True, False]))
    return summary.with_columns(
        meaning=pl.col("error").map_elements(errno_meaning, return_dtype=pl.Utf8),
    ).select("error", "meaning", "processes", "points")


def errno_meaning(name: str) -> str:
    return model.ERRNO_CAUSES.get(name, "see the run's logs").format(
        base=model.CLIENT_BASELINE_FDS)


def outcomes(d: Data) -> Blocks:
    out = Blocks()
    if d.clients.is_empty():
        return out.md("No client process recorded how it stopped.")
    return out.chart(charts.outcomes(d.clients, d.labels)).table(errno_summary(d.clients))


# --- 6. Observed against predicted ------------------------------------------------------------

def model_terms() -> Blocks:
    """The model's terms in words, with its own constants."""
    return Blocks().md(
        "The model (`tcplimits.model`) bounds each client container by its port pool (the range "
        "minus the ports already held in its namespace), by its processes' descriptors "
        f"(processes × (nofile − {model.CLIENT_BASELINE_FDS})) and by an optional bound of its "
        "own; the server by its workers' descriptors "
        f"(workers × (nofile − {model.SERVER_BASELINE_FDS})) plus the accept queue (backlog + 1); "
        "everything by conntrack room. The smallest term wins and names the error clients "
        "should see.")


def agreement(comparisons: list[model.Comparison]) -> str:
    """How many points agree with the model (and exactly), and which term limited them."""
    a = agreement_counts(comparisons)
    named = ", ".join(f"{k} at {plural(v, 'point')}" for k, v in a.limits.items())
    return (f"**{a.within:,} of {plural(a.points, 'finished point')}** agree with the "
            f"prediction made before their first connect(), within max({model.TOLERANCE_ABS}, "
            f"{model.TOLERANCE_REL:.1%} of the prediction) connections; {a.exact:,} match it "
            f"exactly. The limiting factor: {named}.")


def observed_vs_predicted(d: Data) -> Blocks:
    out = Blocks()
    if not d.comparisons:
        return out.md("No point finished, so no prediction can be checked.")
    frame = render.comparison_frame(d.comparisons)
    out.md(agreement(d.comparisons)).chart(charts.observed_vs_predicted(frame, d.labels))
    if not charts.differences(frame):
        out.md("Every point held exactly the predicted count: no difference to draw.")
    return out


def stopped_with(errnos: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in errnos.items()) or "–"


def comparison_rows(comparisons: list[model.Comparison],
                    labels: Mapping[str, str] | None = None) -> pl.DataFrame:
    """One row per finished point. "predicted" is the run's own prediction, recorded before its
    first connect(); a "with held ports" column (the model with the ports each client found
    held counted) appears only when some run's prediction differs from it, filled where it
    does. Points by name (``labels``), the run id last."""
    labels = labels or {}
    differ = any(c.expected != c.predicted for c in comparisons)
    rows = []
    for c in comparisons:
        row = {"point": labels.get(c.run_id, c.run_id), "limit": c.limit,
               "predicted": c.predicted}
        if differ:
            row["with held ports"] = c.expected if c.expected != c.predicted else None
        rows.append({**row, "observed": c.observed, "difference": c.deviation,
                     "agrees": "yes" if c.within_tolerance else '<span class="bad">no</span>',
                     "stopped with": stopped_with(c.errnos),
                     "explanation": render.html_list(c.explanations) or "as predicted",
                     "run id": c.run_id})
    return pl.DataFrame(rows)


def held_ports_note(comparisons: list[model.Comparison]) -> str:
    """Which prediction counts the held ports, and whether the table shows a second one."""
    differ = [c for c in comparisons if c.expected != c.predicted]
    if not differ:
        return ("Every point's prediction already counts the ports its clients found held, so "
                "the model with them counted gives the same number everywhere and is not shown "
                "twice.")
    return (f"At {plural(len(differ), 'point')} the recorded prediction did not count the ports "
            "held at start; the column \"with held ports\" gives the model with them counted "
            "there, and is empty where the two agree.")


def beyond_tolerance(comparisons: list[model.Comparison],
                     labels: Mapping[str, str] | None = None) -> str:
    """Markdown: a heading and the explanations of each point beyond the tolerance."""
    off = [c for c in comparisons if not c.within_tolerance]
    if not off:
        return ("No point deviates beyond the tolerance; every nonzero difference above is "
                "explained in its row.")
    parts = [f"### Points beyond the tolerance ({len(off)})"]
    for c in off:
        name = render.md_escape((labels or {}).get(c.run_id, c.run_id))
        parts.append(f"**{name}** (`{c.run_id}`): observed {c.observed:,}, predicted {c.predicted:,} "
                     f"({c.deviation:+,}; tolerance ±{c.tolerance:,}).\n\n"
                     + bullets(c.explanations or ["no cause found in the data"]))
    return "\n\n".join(parts)


def comparison_table(d: Data) -> Blocks:
    out = Blocks()
    if not d.comparisons:
        return out
    return (out.md("Every finished point; the explanation lists what the data shows for any "
                   "difference. " + held_ports_note(d.comparisons))
            .table(comparison_rows(d.comparisons, d.labels), raw={"agrees", "explanation"},
                   classes="comparison")
            .md(beyond_tolerance(d.comparisons, d.labels)))


# --- 7. Connect latency -----------------------------------------------------------------------

def port_bound_ids(d: Data) -> list[str]:
    return d.ok.filter(pl.col("predicted_limit") == model.PORTS)["run_id"].to_list()


LATENCY_CHART = "drawn dashed above and left out of the medians when quiet points remain"


def noisy_note(runs: pl.DataFrame, run_ids: Iterable[str], shown: str = LATENCY_CHART,
               labels: Mapping[str, str] | None = None) -> str:
    """A sentence flagging the points among ``run_ids`` whose times are suspect, and how the
    section shows them (``shown``); "" if none."""
    noisy = noisy_runs(runs).filter(pl.col("run_id").is_in(list(run_ids)))
    if noisy.is_empty():
        return ""
    lines = bullets(f"{render.md_escape((labels or {}).get(r['run_id'], r['run_id']))}: "
                    f"{render.md_escape(r['noisy_reason'] or 'no reason recorded')}"
                    for r in noisy.iter_rows(named=True))
    return (f"**{plural(noisy.height, 'point')} ran noisy** (closed sockets of other runs "
            "still in the host's kernel, which slow `connect()`, or SYNs the server dropped, "
            f"which cost a retransmit): their times are suspect, {shown}.\n\n" + lines)


def latency_medians(d: Data) -> tuple[float | None, float | None]:
    """Median connect() time (s) of the port-bound points while less than half of the range
    was in use, and in its last tenth; of the quiet points when there are any."""
    ids = port_bound_ids(d)
    noisy = set(noisy_runs(d.runs)["run_id"].to_list())
    ids = [i for i in ids if i not in noisy] or ids
    lat = d.series.filter(pl.col("run_id").is_in(ids))
    if lat.is_empty():
        return None, None
    filled = pool_fill(lat)
    early = filled.filter(pl.col("fill") < 0.5)["connect_latency_s"].median()
    late = filled.filter(pl.col("fill") >= 0.9)["connect_latency_s"].median()
    return early, late


def latency(d: Data) -> Blocks:
    out = Blocks()
    if d.series.filter(pl.col("run_id").is_in(port_bound_ids(d))).is_empty():
        return out.md("No port-bound point recorded progress samples.")
    out.chart(charts.latency_vs_fill(d.series, d.runs, d.labels))
    early, late = latency_medians(d)
    if early and late:
        out.md(f"Median `connect()` time: **{early * 1e6:,.0f} µs** while less than half of the "
               f"range was in use, **{late * 1e6:,.0f} µs** in its last tenth "
               f"({late / early:,.1f} × slower).")
    note = noisy_note(d.runs, port_bound_ids(d), labels=d.labels)
    if note:
        out.md(note)
    return out


# --- 8. Server side ---------------------------------------------------------------------------

def server_gap_table(d: Data) -> pl.DataFrame:
    """The finished points where the server accepted a different number than the clients
    hold: the gap, the accept queue (the model's), workers, their nofile and their errors."""
    differ = server_gaps(d.ok).filter(pl.col("gap") != 0)
    errs = (d.server.group_by("run_id")
            .agg(server_errors=pl.col("error").drop_nulls().unique().sort().str.join(", "),
                 workers=pl.len()))
    return d.named(differ.join(errs, on="run_id", how="left")
            .select("run_id",
                    pl.col("connections_total").alias("clients hold"),
                    pl.col("server_accepted").alias("server accepted"), "gap",
                    pl.col("queue").alias("backlog + 1"), "workers",
                    pl.col("resolved_server_nofile").alias("worker nofile"),
                    pl.col("server_errors").alias("server stopped with")))


def server_side(d: Data) -> Blocks:
    out = Blocks()
    both = server_gaps(d.ok)
    if both.is_empty():
        return out.md("No finished point recorded the server's count.")
    gaps = server_gap_table(d)
    out.chart(charts.server_vs_clients(d.runs, d.labels)).md(
        f"At {both.height - gaps.height:,} of {plural(both.height, 'point')} the server accepted "
        "every connection the clients hold.")
    return out.table(gaps) if not gaps.is_empty() else out
