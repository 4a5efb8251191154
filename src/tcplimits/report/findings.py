"""The report's findings: pure functions of the dataset's frames and the model's comparisons.

``report/report.qmd`` holds prose and one call per cell; whatever the report says that depends
on the data is selected, counted and worded here, and tested in ``tests/test_findings.py``.
Formulas are not: predictions, tolerances and the accept queue are ``tcplimits.model``'s,
explanations come from ``model.compare_run``, port counts from ``tcplimits.config.params``.

Each section function takes a ``Data`` (the four tables and the comparisons) and returns
``Blocks``: Markdown, HTML and charts in the order the cell shows them. The smaller functions
beside them return the rows or numbers a section is made of.

The rows and sentences of the larger sections live beside it, as pure functions of the
frames: tcplimits.report.sections.fourtuple (sections 9 and 10), million_findings (12), churn_findings
(13); the section functions here lay them out. Sections 1-8, 11 and 14 share the Data's
comparisons and the helpers below, and stay here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import polars as pl

from tcplimits.report import charts, render
from tcplimits.model import hostlimits
from tcplimits import model
from tcplimits.report.sections import fourtuple as tuple_findings
from tcplimits.report.sections.churn import (churn_answer, churn_counts, churn_labels,
    churn_mechanism, churn_points, is_churn)
from tcplimits.report.sections.million import (biggest, ladder_runs, ladder_table, limit_rules,
    limits_table, memory_sentence, million_headline)
from tcplimits.config.params import FIELDS, KERNEL_DEFAULT_PORT_RANGE, port_count
from tcplimits.report.render import plural
from tcplimits.results import STATUS_FAILED, STATUS_OK, STATUS_UNSUPPORTED

# The seed's claims (the blog post and the book it argues with), set against the data.
SEED_RANGE = "{}-{}".format(*KERNEL_DEFAULT_PORT_RANGE)
SEED_PER_CLIENT = 28_232   # the blog's figure at the default range
WIDE_RANGE = "1024-65535"
BOOK_PORTS = 64_511        # "1024-65535" as the book counts it

# What varying each parameter tests (section 1).
WHAT_IT_TESTS = {
    "port_range": "connections per client follow the port range (the 28,232 and 64,512 claims)",
    "nofile": "descriptors per process: the RLIMIT_NOFILE explanation",
    "procs": "processes add descriptors to a container, never ports",
    "clients": "every client address brings its own ports; the server holds their sum",
    "server_nofile": "the server's own descriptor limit",
    "server_workers": "server processes sharing one listening socket",
    "backlog": "the accept queue: connections the kernel completes before accept()",
    "max_connections": "a bound the client sets itself",
    "connect_timeout": "how long a dropped SYN is waited for",
    "network": "a Docker bridge (the host's conntrack sees every connection) or loopback",
    "server_ports": "the 4-tuple's server port: every port a pool of its own (section 9)",
    "server_addrs": "the 4-tuple's server address, the book's virtual IPs (sections 9, 10)",
    "client_addrs": "the 4-tuple's source address: pools only where the bind mode keeps them",
    "bind_mode": "whether the source port is picked before the destination is known",
    "mode": "connections held until the first failure, or opened and closed (churn)",
    "rate": "churn: how fast a client opens and closes, against what TIME_WAIT lets it",
    "duration": "churn: how long a client keeps going",
    "closer": "churn: which end closes first and so keeps the TIME_WAIT socket",
    "tw_reuse": "churn: whether connect() may take a port still in TIME_WAIT",
    "tw_reuse_delay": "churn: how old a TIME_WAIT socket must be before it is reused",
    "timestamps": "churn: TCP timestamps, which tcp_tw_reuse needs",
}


# --- What a cell shows ------------------------------------------------------------------------

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

    def _ipython_display_(self) -> None:
        from IPython.display import HTML, Markdown, display

        for kind, item in self:
            display(Markdown(item) if kind == "markdown" else HTML(item) if kind == "html"
                    else item)


# --- The data ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """The dataset's tables and every finished run set against the model. ``runs``,
    ``clients``, ``server`` and ``series`` hold the points of mode hold (the connections held);
    ``churn_runs`` and ``churn`` the points of mode churn (section 13)."""

    runs: pl.DataFrame
    clients: pl.DataFrame
    server: pl.DataFrame
    series: pl.DataFrame
    churn_runs: pl.DataFrame = field(default_factory=pl.DataFrame)
    churn: pl.DataFrame = field(default_factory=pl.DataFrame)

    @classmethod
    def of(cls, tables: Mapping[str, pl.DataFrame]) -> "Data":
        runs = tables["runs"]
        churn_ids = runs.filter(is_churn(runs))["run_id"].to_list()

        def hold(df: pl.DataFrame) -> pl.DataFrame:
            return df.filter(~pl.col("run_id").is_in(churn_ids)) if "run_id" in df.columns else df

        return cls(hold(runs), hold(tables["clients"]), hold(tables["server"]),
                   hold(tables["series"]), runs.filter(is_churn(runs)),
                   tables.get("churn", pl.DataFrame()))

    @cached_property
    def comparisons(self) -> list[model.Comparison]:
        return model.compare_runs(self.ok.to_dicts(), self.clients.to_dicts(),
                                  self.server.to_dicts())

    @cached_property
    def by_id(self) -> dict[str, model.Comparison]:
        return {c.run_id: c for c in self.comparisons}

    @cached_property
    def every(self) -> pl.DataFrame:
        """Every point, hold and churn: for what the run set is, where it ran, and which
        points produced no measurement."""
        if self.churn_runs.is_empty():
            return self.runs
        return pl.concat([self.runs, self.churn_runs], how="diagonal_relaxed")

    @property
    def ok(self) -> pl.DataFrame:
        return self.runs.filter(pl.col("status") == STATUS_OK)

    @property
    def unfinished(self) -> pl.DataFrame:
        """Points of either mode that produced no measurement."""
        return self.every.filter(pl.col("status") != STATUS_OK)


def load(data_dir: str | Path) -> Data:
    """The dataset directory the report reads (``render.load_dataset``) as ``Data``."""
    return Data.of(render.load_dataset(data_dir))


# --- Small helpers ----------------------------------------------------------------------------

def values(df: pl.DataFrame, column: str) -> list:
    """Distinct non-null values of a column, in order (numbers as numbers where a column mixes
    them with words: rate 25, 400, max)."""
    if column not in df.columns or df.is_empty():
        return []
    return sorted((v for v in df[column].unique().to_list() if v is not None), key=_in_order)


def _in_order(value: Any) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def span(numbers: Iterable[int]) -> str:
    """'28,231', or '14,000 – 28,231' when the numbers differ; a dash for none."""
    numbers = list(numbers)
    if not numbers:
        return "–"
    lo, hi = min(numbers), max(numbers)
    return f"{lo:,}" if lo == hi else f"{lo:,} – {hi:,}"


def client_counts(clients: pl.DataFrame, run_ids: Iterable[str]) -> list[int]:
    """Connections per client container (its processes summed) for these runs."""
    sel = clients.filter(pl.col("run_id").is_in(list(run_ids)))
    return charts.per_client(sel)["connections"].to_list() if not sel.is_empty() else []


def status_counts(runs: pl.DataFrame) -> dict[str, int]:
    return {s: runs.filter(pl.col("status") == s).height
            for s in (STATUS_OK, STATUS_FAILED, STATUS_UNSUPPORTED)}


def most_accepted(runs: pl.DataFrame) -> dict | None:
    """The finished run whose server accepted the most connections (a runs row), or None."""
    best = (runs.filter((pl.col("status") == STATUS_OK) & pl.col("server_accepted").is_not_null())
            .sort("server_accepted").tail(1))
    return best.row(0, named=True) if best.height else None


def _by_limit(comparisons: Iterable[model.Comparison], limit: str) -> list[model.Comparison]:
    return [c for c in comparisons if c.limit == limit]


# --- 1. The question --------------------------------------------------------------------------

def varied_parameters(runs: pl.DataFrame) -> pl.DataFrame:
    """Each parameter that takes more than one value: its values and what it tests."""
    rows = [{"parameter": k, "values": ", ".join(render.fmt(v) for v in values(runs, k)),
             "tests": why} for k, why in WHAT_IT_TESTS.items() if len(values(runs, k)) > 1]
    return pl.DataFrame(rows, schema={"parameter": pl.Utf8, "values": pl.Utf8, "tests": pl.Utf8})


def question(d: Data) -> Blocks:
    out = Blocks()
    if d.every.is_empty():
        return out.md("**This dataset has no runs at all**, so no claim is tested below: every "
                      "section says what it would show. Run the workflow (`snakemake --cores 4`) "
                      "to fill it.")
    counts = status_counts(d.every)
    out.md(f"This run set has **{plural(d.every.height, 'point')}**: {counts[STATUS_OK]:,} "
           f"finished, {counts[STATUS_FAILED]:,} failed and {counts[STATUS_UNSUPPORTED]:,} could "
           "not run on this engine (section 11)."
           + (churn_share(d.churn_runs.height, d.every.height) if d.churn_runs.height else "")
           + " What each varied parameter tests:")
    varied = varied_parameters(d.every)
    if varied.is_empty():
        return out.md("No parameter varies: the run set is a single configuration.")
    return out.table(varied)


def churn_share(churn: int, points: int) -> str:
    """How many of the run set's points are churn points (section 13)."""
    if churn == points:
        return (" All of them are churn points (section 13): none holds connections, so "
                "sections 3–10 have nothing to show.")
    return (f" {churn:,} of them {'is a churn point' if churn == 1 else 'are churn points'} "
            "(section 13).")


# --- 2. The environment -----------------------------------------------------------------------

def environment_facts(runs: pl.DataFrame) -> pl.DataFrame:
    """Kernel, Docker, image, versions and the time span of the runs, one row each."""
    def env(column: str) -> str:
        found = values(runs, column)
        return ", ".join(render.fmt(v) for v in found) if found else "not recorded"

    started, ended = values(runs, "started_at"), values(runs, "ended_at")
    when = (f"{str(started[0])[:16].replace('T', ' ')} to "
            f"{str(ended[-1])[:16].replace('T', ' ')} UTC" if started and ended
            else "not recorded")
    facts = [
        ("Kernel", env("env_kernel")),
        ("Docker", env("env_docker_version")),
        ("Storage driver", env("env_storage_driver")),
        ("cgroup version", env("env_cgroup_version")),
        ("Engine nofile cap", env("env_engine_nofile_cap")
         + " (the most a container may be given)"),
        ("nf_conntrack_max", env("env_nf_conntrack_max")),
        ("Image", env("env_image_tag") + " ("
         + ", ".join(str(i)[:19] for i in values(runs, "env_image_id")) + ")"),
        ("Host", env("env_hostname")),
        ("tcplimits", f"{env('env_tcplimits_version')}, git {env('env_git_sha')}"),
        ("Runs", when),
    ]
    return pl.DataFrame(facts, schema=["fact", "value"], orient="row")


def grid_table(runs: pl.DataFrame) -> pl.DataFrame:
    """Every parameter, the values the runs gave it (a null: the default) and its meaning."""
    rows = []
    for name, field in FIELDS.items():
        found = values(runs, name)
        nulls = runs[name].null_count() if name in runs.columns else 0
        default = "engine cap" if name == "server_nofile" else "default"
        shown = [render.fmt(v) for v in found] + ([default] if nulls else [])
        rows.append({"parameter": name, "values": ", ".join(shown) or "–",
                     "meaning": field.help})
    return pl.DataFrame(rows)


def environment(d: Data) -> Blocks:
    out = Blocks()
    if d.every.is_empty():
        return out.md("No run recorded its environment.")
    return (out.table(environment_facts(d.every), classes="kv", header=False)
            .md("The grid, parameter by parameter (a point is one combination):")
            .table(grid_table(d.every)))


def hosts_table(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per host the points ran on: its points, finished points, connections held
    and what differs between hosts (kernel, Docker, the engine's nofile cap)."""
    if "env_hostname" not in runs.columns or runs.is_empty():
        return pl.DataFrame(schema={"host": pl.Utf8, "points": pl.Int64})
    return (runs.with_columns(host=pl.col("env_hostname").fill_null("not recorded"))
            .group_by("host").agg(
                points=pl.len(),
                finished=(pl.col("status") == STATUS_OK).sum().cast(pl.Int64),
                connections=pl.col("connections_total").sum(),
                kernel=pl.col("env_kernel").drop_nulls().unique().sort().str.join(", "),
                docker=pl.col("env_docker_version").drop_nulls().unique().sort().str.join(", "),
                nofile_cap=pl.col("env_engine_nofile_cap").max())
            .sort("host"))


def hosts(d: Data) -> Blocks:
    """Where the points ran: one line for one host; for several (a sweep on a cluster), a
    row per host and every finished point against the model, coloured by host."""
    out = Blocks()
    table = hosts_table(d.every)
    if table.is_empty():
        return out
    if table.height == 1:
        return out.md(f"All {plural(table['points'][0], 'point')} ran on one host, "
                      f"`{table['host'][0]}`.")
    out.md(f"The points ran on {table.height} hosts. Each point measures the kernel and the "
           "Docker engine of its host, so a count belongs to its host: compare points of "
           "different hosts only where the hosts agree (kernel, engine cap).")
    out.table(table)
    if d.comparisons:
        host_of = dict(zip(d.runs["run_id"], d.runs["env_hostname"].fill_null("not recorded")))
        frame = render.comparison_frame(d.comparisons)
        frame = frame.with_columns(host=pl.col("run_id").replace_strict(host_of))
        out.chart(charts.by_host(frame))
    return out


# --- 3. Headline: the seed, reproduced --------------------------------------------------------

def seed_row(d: Data, label: str, port_range: str, blog: str) -> tuple[dict, list[str]]:
    """One row of the seed table: the port-bound finished points of ``port_range``."""
    sel = d.ok.filter((pl.col("port_range") == port_range)
                      & (pl.col("predicted_limit") == model.PORTS))
    ids = sel["run_id"].to_list()
    stops = values(d.clients.filter(pl.col("run_id").is_in(ids)), "error")
    return {"": label, "the blog": blog, "this run set": span(client_counts(d.clients, ids)),
            "points": len(ids),
            "details": ("stopped with " + ", ".join(stops)) if stops else "–"}, ids


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
                     "details": f"{best['run_id']}: "
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
    on_line = _by_limit(d.comparisons, model.PORTS)
    fd_bound = _by_limit(d.comparisons, model.DESCRIPTORS)
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
    return out.chart(charts.connections_vs_range(d.clients))


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
    return out.chart(charts.outcomes(d.clients)).table(errno_summary(d.clients))


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


def limit_counts(comparisons: Iterable[model.Comparison]) -> dict[str, int]:
    """Points per limiting term, the most frequent first."""
    limits: dict[str, int] = {}
    for c in comparisons:
        limits[c.limit] = limits.get(c.limit, 0) + 1
    return dict(sorted(limits.items(), key=lambda kv: -kv[1]))


def agreement(comparisons: list[model.Comparison]) -> str:
    """How many points agree with the model (and exactly), and which term limited them."""
    agree = sum(c.within_tolerance for c in comparisons)
    exact = sum(c.deviation == 0 for c in comparisons)
    named = ", ".join(f"{k} at {plural(v, 'point')}" for k, v in limit_counts(comparisons).items())
    return (f"**{agree:,} of {plural(len(comparisons), 'finished point')}** agree with the "
            f"prediction made before their first connect(), within max({model.TOLERANCE_ABS}, "
            f"{model.TOLERANCE_REL:.1%} of the prediction) connections; {exact:,} match it "
            f"exactly. The limiting factor: {named}.")


def observed_vs_predicted(d: Data) -> Blocks:
    out = Blocks()
    if not d.comparisons:
        return out.md("No point finished, so no prediction can be checked.")
    return (out.md(agreement(d.comparisons))
            .chart(charts.observed_vs_predicted(render.comparison_frame(d.comparisons))))


def stopped_with(errnos: Mapping[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" if v > 1 else k for k, v in errnos.items()) or "–"


def comparison_rows(comparisons: list[model.Comparison]) -> pl.DataFrame:
    """One row per finished point. "predicted" is the run's own prediction, recorded before its
    first connect(); a "with held ports" column (the model with the ports each client found
    held counted) appears only when some run's prediction differs from it, filled where it
    does."""
    differ = any(c.expected != c.predicted for c in comparisons)
    rows = []
    for c in comparisons:
        row = {"point": c.run_id, "limit": c.limit, "predicted": c.predicted}
        if differ:
            row["with held ports"] = c.expected if c.expected != c.predicted else None
        rows.append({**row, "observed": c.observed, "difference": c.deviation,
                     "agrees": "yes" if c.within_tolerance else '<span class="bad">no</span>',
                     "stopped with": stopped_with(c.errnos),
                     "explanation": render.html_list(c.explanations) or "as predicted"})
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


def beyond_tolerance(comparisons: list[model.Comparison]) -> str:
    """Markdown: a heading and the explanations of each point beyond the tolerance."""
    off = [c for c in comparisons if not c.within_tolerance]
    if not off:
        return ("No point deviates beyond the tolerance; every nonzero difference above is "
                "explained in its row.")
    parts = [f"### Points beyond the tolerance ({len(off)})"]
    for c in off:
        parts.append(f"**{c.run_id}**: observed {c.observed:,}, predicted {c.predicted:,} "
                     f"({c.deviation:+,}; tolerance ±{c.tolerance:,}).\n\n"
                     + "\n".join(f"- {e}" for e in c.explanations
                                 or ["no cause found in the data"]))
    return "\n\n".join(parts)


def comparison_table(d: Data) -> Blocks:
    out = Blocks()
    if not d.comparisons:
        return out
    return (out.md("Every finished point; the explanation lists what the data shows for any "
                   "difference. " + held_ports_note(d.comparisons))
            .table(comparison_rows(d.comparisons), raw={"agrees", "explanation"},
                   classes="comparison")
            .md(beyond_tolerance(d.comparisons)))


# --- 7. Connect latency -----------------------------------------------------------------------

def port_bound_ids(d: Data) -> list[str]:
    return d.ok.filter(pl.col("predicted_limit") == model.PORTS)["run_id"].to_list()


def noisy_runs(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs whose times are suspect (a noisy host, dropped SYNs): run_id, noisy_reason."""
    if "noisy" not in runs.columns:  # a dataset from before the host was recorded
        return pl.DataFrame(schema={"run_id": pl.Utf8, "noisy_reason": pl.Utf8})
    return runs.filter(pl.col("noisy").fill_null(False)).select("run_id", "noisy_reason")


LATENCY_CHART = "drawn dashed above and left out of the medians when quiet points remain"


def noisy_note(runs: pl.DataFrame, run_ids: Iterable[str], shown: str = LATENCY_CHART) -> str:
    """A sentence flagging the points among ``run_ids`` whose times are suspect, and how the
    section shows them (``shown``); "" if none."""
    noisy = noisy_runs(runs).filter(pl.col("run_id").is_in(list(run_ids)))
    if noisy.is_empty():
        return ""
    lines = "\n".join(f"- {r['run_id']}: {r['noisy_reason'] or 'no reason recorded'}"
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
    filled = charts.pool_fill(lat)
    early = filled.filter(pl.col("fill") < 0.5)["connect_latency_s"].median()
    late = filled.filter(pl.col("fill") >= 0.9)["connect_latency_s"].median()
    return early, late


def latency(d: Data) -> Blocks:
    out = Blocks()
    if d.series.filter(pl.col("run_id").is_in(port_bound_ids(d))).is_empty():
        return out.md("No port-bound point recorded progress samples.")
    out.chart(charts.latency_vs_fill(d.series, d.runs))
    early, late = latency_medians(d)
    if early and late:
        out.md(f"Median `connect()` time: **{early * 1e6:,.0f} µs** while less than half of the "
               f"range was in use, **{late * 1e6:,.0f} µs** in its last tenth "
               f"({late / early:,.1f} × slower).")
    note = noisy_note(d.runs, port_bound_ids(d))
    if note:
        out.md(note)
    return out


# --- 8. Server side ---------------------------------------------------------------------------

def server_gaps(d: Data) -> pl.DataFrame:
    """The finished points where the server accepted a different number than the clients
    hold: the gap, the accept queue (the model's), workers, their nofile and their errors."""
    differ = charts.server_gaps(d.ok).filter(pl.col("gap") != 0)
    errs = (d.server.group_by("run_id")
            .agg(server_errors=pl.col("error").drop_nulls().unique().sort().str.join(", "),
                 workers=pl.len()))
    return (differ.join(errs, on="run_id", how="left")
            .select(pl.col("run_id").alias("point"),
                    pl.col("connections_total").alias("clients hold"),
                    pl.col("server_accepted").alias("server accepted"), "gap",
                    pl.col("queue").alias("backlog + 1"), "workers",
                    pl.col("resolved_server_nofile").alias("worker nofile"),
                    pl.col("server_errors").alias("server stopped with")))


def server_side(d: Data) -> Blocks:
    out = Blocks()
    both = charts.server_gaps(d.ok)
    if both.is_empty():
        return out.md("No finished point recorded the server's count.")
    gaps = server_gaps(d)
    out.chart(charts.server_vs_clients(d.runs)).md(
        f"At {both.height - gaps.height:,} of {plural(both.height, 'point')} the server accepted "
        "every connection the clients hold.")
    return out.table(gaps) if not gaps.is_empty() else out


# --- 9. The 4-tuple, member by member; 10. The book's claim (tcplimits.report.sections.fourtuple) --------

def tuple_members(d: Data) -> Blocks:
    out = Blocks()
    points = tuple_findings.tuple_points(d.runs, d.clients)
    if not tuple_findings.varies_tuple(points):
        return out.md("No point of this sweep varies the 4-tuple; `config/fourtuple.yaml` "
                      "has them all.")
    out.chart(charts.tuple_space(tuple_findings.chart_frame(points)))
    for sentence in tuple_findings.member_sentences(points):
        out.md(sentence)
    return out.table(tuple_findings.member_table(points))


def book_claim(d: Data) -> Blocks:
    claim = tuple_findings.book_claim(tuple_findings.tuple_points(d.runs, d.clients), d.runs)
    return Blocks().md("\n".join(f"- {sentence}" for sentence in claim) if claim else
                       "This sweep has no point that tests the claim; "
                       "`config/fourtuple.yaml` has them.")


# --- 11. Failed and unsupported points; rerunning ---------------------------------------------

def run_command(run: Mapping[str, Any]) -> str:
    """The `tcplimits run` command that repeats a point (a runs row)."""
    return "tcplimits run " + " ".join(model.params_of(run).to_args())


def unfinished_rows(runs: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame(
        [{"point": r["run_id"], "status": r["status"], "reason": r["reason"] or "–",
          "parameters": " ".join(model.params_of(r).to_args())}
         for r in runs.filter(pl.col("status") != STATUS_OK).iter_rows(named=True)])


def unfinished(d: Data) -> Blocks:
    out = Blocks()
    if d.unfinished.is_empty():
        return out.md("Every point ran to its end." if not d.every.is_empty()
                      else "No point was run.")
    return (out.md("These points produced no measurement; the reason is the one the engine "
                   "recorded.").table(unfinished_rows(d.every)))


def rerun_rows(runs: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame(
        [{"point": r["run_id"], "status": r["status"],
          "compose file": f"{r['run_dir']}/compose.yml" if r["run_dir"] else "–",
          "tcplimits run": run_command(r)} for r in runs.iter_rows(named=True)])


def rerun(d: Data) -> Blocks:
    out = Blocks()
    if d.every.is_empty():
        return out
    return out.html(f"<details><summary>The {plural(d.every.height, 'point')}: compose file and "
                    "command of each</summary>" + render.html_table(rerun_rows(d.every))
                    + "</details>")


# --- 12. One host, one million (issue 10) ------------------------------------------------------
# The runs of 100,000 connections or more, or on loopback: connections held against the model,
# what stopped each (the model's term, or the host setting), how long connecting took, and
# what a connection cost in memory and conntrack entries; then the host's limits as the
# biggest run met them (tcplimits.model.hostlimits, recorded with each run).

def one_million(d: Data) -> Blocks:
    out = Blocks().md(million_headline(d.runs))
    table = ladder_table(d.runs)
    if table.is_empty():
        return out
    top = biggest(d.runs)
    out.table(table)
    note = noisy_note(d.runs, ladder_runs(d.runs)["run_id"].to_list(),
                      "marked suspect in the table: the counts stand")
    if note:
        out.md(note)
    if top is not None:
        held = ladder_runs(d.runs).filter(pl.col("connections_total").is_not_null())
        out.chart(charts.held_against_limits(held, limit_rules(top)))
    memory = memory_sentence(d.runs)
    if memory:
        out.md(memory)
    limits = limits_table(top) if top else pl.DataFrame()
    if not limits.is_empty():
        out.md(f"The host's limits as the biggest run ({top['run_id']}) met them. tcplimits "
               "changes none of them; where one stops a point the run says so, with the "
               "command that would raise it:")
        out.table(limits)
    said: set[str] = set()
    for r in ladder_runs(d.runs).iter_rows(named=True):
        for lim in hostlimits.from_record(r.get("host_limits")):
            if lim.binds and lim.sentence() not in said:
                said.add(lim.sentence())
                out.md(lim.sentence())
    return out


# --- 13. Churn --------------------------------------------------------------------------------

def churn(d: Data) -> Blocks:
    out = Blocks().md(churn_mechanism())
    points = churn_points(d.churn_runs)
    if points.is_empty():
        return out.md("This run set has no finished churn point. `snakemake --cores 4 "
                      "--configfile config/churn.yaml` sweeps who closes first × "
                      "`tcp_tw_reuse` × rate on a 1,000-port range.")
    c = churn_counts(points)
    out.md(f"**{plural(c['points'], 'churn point')}** finished: {c['stopped']:,} stopped on an "
           f"error, {c['ran']:,} ran their full duration; **{c['agree']:,} of {c['points']:,}** "
           "ended as the model said.")
    out.chart(charts.churn_timeline(d.churn, churn_labels(d.churn_runs)))
    out.chart(charts.churn_rate_vs_model(points))
    return out.table(points.select("point", "asked", "sustained", "model_bound", "connections",
                                   "outcome", "stopped_at_s", "model_stop_at_s", "verdict"))


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
    multi = [c for c in _by_limit(d.comparisons, model.PORTS)
             if (clients_of.get(c.run_id) or 1) > 1]
    if multi:
        c = max(multi, key=lambda c: c.observed)
        k = clients_of[c.run_id]
        said.append(f"Client addresses add up: at {c.run_id} {k:,} client containers held "
                    f"{c.observed:,} connections to the same server port, {k:,} × what one "
                    "address can open at that range. No virtual IP on the server is needed; "
                    "more client addresses are.")
    bound = _by_limit(d.comparisons, model.SERVER)
    if bound:
        c = bound[0]
        said.append(f"Where the server ran out of descriptors ({c.run_id}) it accepted "
                    f"{render.fmt(c.server_accepted)}, the clients held {c.observed:,}, and the "
                    "connections beyond that waited for a SYN-ACK until their timeout "
                    "(ETIMEDOUT).")
    return said


def client_answer(d: Data) -> str:
    """What stops a client: its port pool or its descriptors, with the data's examples."""
    ports = _by_limit(d.comparisons, model.PORTS)
    fds = _by_limit(d.comparisons, model.DESCRIPTORS)
    base = model.CLIENT_BASELINE_FDS
    stop = ["**What stops a client?** The smaller of two budgets."]
    if ports:
        per = charts.per_client(d.clients.filter(pl.col("run_id").is_in([c.run_id for c in ports])))
        top = per.sort("connections").tail(1).row(0, named=True)
        stop.append(f"Its port pool: the range of `ip_local_port_range` minus ports already held "
                    f"in its namespace, shared by all its processes. At "
                    f"{plural(len(ports), 'point')} this ran out first, with EADDRNOTAVAIL; the "
                    f"most one client held is {top['connections']:,} ({top['run_id']}, "
                    f"{top['port_count']:,} ports).")
    else:
        stop.append("Its port pool (the range minus ports already held, EADDRNOTAVAIL): no "
                    "point of this run set was bound by it.")
    if fds:
        c = fds[0]
        stop.append(f"Its descriptors: nofile − {base} per process, EMFILE when they run out "
                    f"({plural(len(fds), 'point')}; {c.run_id} held {c.observed:,}).")
    else:
        stop.append(f"Its descriptors (nofile − {base} per process, EMFILE): no point of this "
                    "run set was bound by them.")
    stop.append("More processes per container add descriptors, never ports; more client "
                "containers add ports.")
    return " ".join(stop)


def conclusion(d: Data) -> Blocks:
    out = Blocks()
    churn = churn_answer(churn_points(d.churn_runs))
    if d.ok.is_empty():
        return out.md("\n\n".join(
            ["Without a finished point that holds connections this run set cannot answer how "
             "many a server holds; sections 1 and 6 say what the model expects.",
             *([churn] if churn else [])]))
    agree = sum(c.within_tolerance for c in d.comparisons)
    said = [*server_answer(d), client_answer(d),
            f"The model predicted {agree:,} of {plural(len(d.comparisons), 'finished point')} "
            "within tolerance; section 6 explains every difference it found.",
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
        agree = sum(c.within_tolerance for c in d.comparisons)
        exact = sum(c.deviation == 0 for c in d.comparisons)
        lines.append(f"hold: {agree:,} of {plural(len(d.comparisons), 'finished point')} as the "
                     f"model predicted ({exact:,} exactly); limited by "
                     + ", ".join(f"{k} at {v:,}" for k, v in limit_counts(d.comparisons).items()))
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
