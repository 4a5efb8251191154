"""Section 14, the conclusion: the report's answers in a few paragraphs, each number from the
data; and ``sweep_summary``, the same verdicts as plain lines for the terminal.
"""

from __future__ import annotations

import polars as pl

from tcplimits import model
from tcplimits.report import render
from tcplimits.report.blocks import Blocks, plural
from tcplimits.report.data import (Data, agreement_counts, by_limit, most_accepted,
                                   noisy_runs, per_client, status_counts)
from tcplimits.report.sections.churn import churn_answer, churn_counts, churn_points
from tcplimits.report.sections.fourtuple import BOOK_PORTS
from tcplimits.results import STATUS_FAILED, STATUS_UNSUPPORTED

# --- 14. Conclusion ---------------------------------------------------------------------------

def server_answer(d: Data) -> list[str]:
    """How many connections one server held, what client addresses add, where it ran out."""
    best = most_accepted(d.runs)
    if not best:
        return []
    beyond = (f", more than the {BOOK_PORTS:,} ports the book names as the ceiling"
              if best["server_accepted"] > BOOK_PORTS else "")
    said = [f"**How many connections can a server hold?** As many as its workers have "
            f"descriptors for, plus backlog + 1 waiting in the accept queue; its one listening "
            f"port is no limit. The most one server accepted here is "
            f"**{best['server_accepted']:,}** on a single port{beyond}, from "
            f"{plural(best['clients'], 'client container')}."]
    clients_of = dict(d.ok.select("run_id", "clients").iter_rows())
    multi = [c for c in by_limit(d.comparisons, model.PORTS)
             if (clients_of.get(c.run_id) or 1) > 1]
    if multi:
        c = max(multi, key=lambda c: c.observed)
        k = clients_of[c.run_id]
        said.append(f"Client addresses add up: at *{render.md_escape(d.name(c.run_id))}* "
                    f"{k:,} client containers held "
                    f"{c.observed:,} connections to the same server port, {k:,} × what one "
                    "address can open at that range. No virtual IP on the server is needed; "
                    "more client addresses are.")
    bound = by_limit(d.comparisons, model.SERVER)
    if bound:
        c = bound[0]
        said.append(f"Where the server ran out of descriptors "
                    f"(*{render.md_escape(d.name(c.run_id))}*) it accepted "
                    f"{render.fmt(c.server_accepted)}, the clients held {c.observed:,}, and the "
                    "connections beyond that waited for a SYN-ACK until their timeout "
                    "(ETIMEDOUT).")
    return said


def client_answer(d: Data) -> str:
    """What stops a client: its port pool or its descriptors, with the data's examples."""
    ports = by_limit(d.comparisons, model.PORTS)
    fds = by_limit(d.comparisons, model.DESCRIPTORS)
    base = model.CLIENT_BASELINE_FDS
    stop = ["**What stops a client?** The smaller of two budgets."]
    if ports:
        per = per_client(d.clients.filter(pl.col("run_id").is_in([c.run_id for c in ports])))
        top = per.sort("connections").tail(1).row(0, named=True)
        stop.append(f"Its port pool: the range of `ip_local_port_range` minus ports already held "
                    f"in its namespace, shared by all its processes. At "
                    f"{plural(len(ports), 'point')} this ran out first, with EADDRNOTAVAIL; the "
                    f"most one client held is {top['connections']:,} "
                    f"(*{render.md_escape(d.name(top['run_id']))}*, "
                    f"{top['port_count']:,} ports).")
    else:
        stop.append("Its port pool (the range minus ports already held, EADDRNOTAVAIL): no "
                    "point of this run set was bound by it.")
    if fds:
        c = fds[0]
        stop.append(f"Its descriptors: nofile − {base} per process, EMFILE when they run out "
                    f"({plural(len(fds), 'point')}; *{render.md_escape(d.name(c.run_id))}* "
                    f"held {c.observed:,}).")
    else:
        stop.append(f"Its descriptors (nofile − {base} per process, EMFILE): no point of this "
                    "run set was bound by them.")
    stop.append("More processes per container add descriptors, never ports; more client "
                "containers add ports.")
    return " ".join(stop)


def conclusion(d: Data) -> Blocks:
    out = Blocks()
    churn = churn_answer(churn_points(d.churn_runs, d.labels))
    if d.ok.is_empty():
        return out.md("\n\n".join(
            ["Without a finished point that holds connections this run set cannot answer how "
             "many a server holds; @sec-question and @sec-model say what the model expects.",
             *([churn] if churn else [])]))
    a = agreement_counts(d.comparisons)
    said = [*server_answer(d), client_answer(d),
            f"The model predicted {a.within:,} of {plural(a.points, 'finished point')} "
            "within tolerance; @sec-model explains every difference it found.",
            *([churn] if churn else [])]
    return out.md("\n\n".join(said))


# --- The sweep's summary, for the terminal ------------------------------------------------------

def sweep_summary(d: Data) -> str:
    """A few plain-text lines for the end of a sweep (`tcplimits report` prints them and the
    workflow shows them when it finishes): how many points ran, how many the model got right,
    which ran noisy and which produced no measurement, with their reasons."""
    every = d.every
    if every.is_empty():
        return "no point was run"
    counts = status_counts(every)
    lines = [f"{plural(every.height, 'point')}: "
             + ", ".join(f"{n:,} {status}" for status, n in counts.items() if n)]
    if d.comparisons:
        a = agreement_counts(d.comparisons)
        lines.append(f"hold: {a.within:,} of {plural(a.points, 'finished point')} as the "
                     f"model predicted ({a.exact:,} exactly); limited by "
                     + ", ".join(f"{k} at {v:,}" for k, v in a.limits.items()))
    points = churn_points(d.churn_runs)
    if not points.is_empty():
        c = churn_counts(points)
        lines.append(f"churn: {c['agree']:,} of {plural(c['points'], 'finished point')} as the "
                     f"model predicted ({c['stopped']:,} stopped on an error, {c['ran']:,} ran "
                     "their full duration)")
    noisy = noisy_runs(every)
    if not noisy.is_empty():
        lines.append(f"noisy: {plural(noisy.height, 'point')}, counts exact, times suspect:")
        lines += [f"  {r['run_id']}: {r['noisy_reason'] or 'no reason recorded'}"
                  for r in noisy.iter_rows(named=True)]
    for status in (STATUS_FAILED, STATUS_UNSUPPORTED):
        gone = every.filter(pl.col("status") == status)
        if not gone.is_empty():
            lines.append(f"{status}: {plural(gone.height, 'point')}, no measurement:")
            lines += [f"  {r['run_id']}: {r['reason'] or 'no reason recorded'}"
                      for r in gone.iter_rows(named=True)]
    return "\n".join(lines)
