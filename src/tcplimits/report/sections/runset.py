"""Sections 1, 2 and 11, the run set itself: the question and what the varied parameters test,
the environment and the hosts the points ran on, and the points that produced no measurement
with how to rerun any point. Churn points count here too (``Data.every``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

from tcplimits import model
from tcplimits.config.params import FIELDS
from tcplimits.report import charts, render
from tcplimits.report.blocks import Blocks, plural
from tcplimits.report.data import Data, status_counts, values
from tcplimits.results import STATUS_FAILED, STATUS_OK, STATUS_UNSUPPORTED

# What a sweep over a parameter tests, where that says more than what the parameter is (a
# claim of the seed, a section's question). Every other parameter shows its help text
# (config.params.FIELDS), which already says it.
SWEEP_TESTS = {
    "port_range": "connections per client follow the port range (the 28,232 and 64,512 claims)",
    "nofile": "descriptors per process: the RLIMIT_NOFILE explanation",
    "procs": "processes add descriptors to a container, never ports",
    "clients": "every client address brings its own ports; the server holds their sum",
    "backlog": "the accept queue: connections the kernel completes before accept()",
    "server_ports": "the 4-tuple's server port: every port a pool of its own (section 9)",
    "server_addrs": "the 4-tuple's server address, the book's virtual IPs (sections 9, 10)",
    "client_addrs": "the 4-tuple's source address: pools only where the bind mode keeps them",
    "bind_mode": "whether the source port is picked before the destination is known",
    "rate": "churn: how fast a client opens and closes, against what TIME_WAIT lets it",
    "tw_reuse": "churn: whether connect() may take a port still in TIME_WAIT",
}
# What varying each parameter tests (section 1): every parameter a sweep can vary, in order.
WHAT_IT_TESTS = {name: SWEEP_TESTS.get(name, field.help) for name, field in FIELDS.items()}


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
           "not run on this engine (@sec-rerun)."
           + (churn_share(d.churn_runs.height, d.every.height) if d.churn_runs.height else "")
           + " What each varied parameter tests:")
    varied = varied_parameters(d.every)
    if varied.is_empty():
        return out.md("No parameter varies: the run set is a single configuration.")
    return out.table(varied)


def churn_share(churn: int, points: int) -> str:
    """How many of the run set's points are churn points (section 13)."""
    if churn == points:
        return (" All of them are churn points (@sec-churn): none holds connections, so "
                "sections 3–10 have nothing to show.")
    return (f" {churn:,} of them {'is a churn point' if churn == 1 else 'are churn points'} "
            "(@sec-churn).")


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
        out.chart(charts.by_host(frame, d.labels))
    return out


# --- 11. Failed and unsupported points; rerunning ---------------------------------------------

def run_command(run: Mapping[str, Any]) -> str:
    """The `tcplimits run` command that repeats a point (a runs row)."""
    return "tcplimits run " + " ".join(model.params_of(run).to_args())


def unfinished_rows(runs: pl.DataFrame, labels: Mapping[str, str] | None = None) -> pl.DataFrame:
    labels = labels or {}
    return pl.DataFrame(
        [{"point": labels.get(r["run_id"], r["run_id"]), "status": r["status"],
          "reason": r["reason"] or "–", "parameters": " ".join(model.params_of(r).to_args()),
          "run id": r["run_id"]}
         for r in runs.filter(pl.col("status") != STATUS_OK).iter_rows(named=True)])


def unfinished(d: Data) -> Blocks:
    out = Blocks()
    if d.unfinished.is_empty():
        return out.md("Every point ran to its end." if not d.every.is_empty()
                      else "No point was run.")
    return (out.md("These points produced no measurement; the reason is the one the engine "
                   "recorded.").table(unfinished_rows(d.every, d.labels)))


def rerun_rows(runs: pl.DataFrame, labels: Mapping[str, str] | None = None) -> pl.DataFrame:
    labels = labels or {}
    return pl.DataFrame(
        [{"point": labels.get(r["run_id"], r["run_id"]), "status": r["status"],
          "compose file": f"{r['run_dir']}/compose.yml" if r["run_dir"] else "–",
          "tcplimits run": run_command(r), "run id": r["run_id"]}
         for r in runs.iter_rows(named=True)])


def rerun(d: Data) -> Blocks:
    out = Blocks()
    if d.every.is_empty():
        return out
    return out.html(f"<details><summary>The {plural(d.every.height, 'point')}: compose file and "
                    "command of each</summary>" + render.html_table(rerun_rows(d.every, d.labels))
                    + "</details>")
