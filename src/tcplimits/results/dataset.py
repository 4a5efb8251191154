"""The dataset: run directories concatenated into Parquet files, parameters as columns.

One place documents every column (the schemas below, in the style of results/rundir.py). Every
file is written atomically; no run directory, or runs without a table, still give every
file with the full schema, so readers never special-case an empty sweep.

Only runs with status ok are measurements: the per-run tables hold rows of ok runs alone,
and a failed or unsupported run keeps its row in runs.parquet, with its reason and null
measured totals. A partial or corrupt run directory (no or unreadable run.json, a missing or
unreadable Parquet file, run ids that do not match) is reported and recorded as failed with
what is wrong; it never stops the dataset.

    <out dir>/
      runs.parquet      one row per run (RUNS_SCHEMA), failed and unsupported ones too
      clients.parquet   every run's clients.parquet + PARAM_COLUMNS (CLIENTS_SCHEMA)
      server.parquet    every run's server.parquet  + PARAM_COLUMNS (SERVER_SCHEMA)
      series.parquet    every run's series.parquet  + PARAM_COLUMNS (SERIES_SCHEMA)
      destinations.parquet, churn.parquet   likewise (DESTINATIONS_SCHEMA, CHURN_SCHEMA)

Longer than ~400 lines: every table's schema is documented here, in one place, next to the
reading of run directories that fills it (and reports the partial or corrupt ones).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import polars as pl

from tcplimits.model import churn as churn_model
from tcplimits import results
from tcplimits.config.params import FIELDS, port_count
from tcplimits.results.nat import NAT_SCHEMA, nat_columns

_PARAM_DTYPES = {"int": pl.Int64, "float": pl.Float64, "port_range": pl.Utf8,
                 "workers": pl.Utf8,  # server_workers may be "auto"
                 "rate": pl.Utf8,  # rate may be "max"
                 "connections": pl.Int64,  # as resolved: "ceiling" becomes the number
                 "choice": pl.Utf8}

# Every RunParams field is a column (a field added to params.FIELDS appears by itself).
PARAMS_SCHEMA: dict[str, pl.DataType] = {
    name: _PARAM_DTYPES[field.kind] for name, field in FIELDS.items()
}

# The environment block of run.json, each key as env_<key>. Keys the engine adds later
# appear too, as strings.
ENV_SCHEMA: dict[str, pl.DataType] = {
    "env_kernel": pl.Utf8,               # the host's kernel release (uname -r)
    "env_docker_version": pl.Utf8,       # the Docker engine's version
    "env_storage_driver": pl.Utf8,       # the engine's storage driver
    "env_engine_nofile_cap": pl.Int64,   # highest nofile the engine can give a container
    "env_nf_conntrack_max": pl.Int64,    # the host's net.netfilter.nf_conntrack_max
    "env_image_id": pl.Utf8,             # the agent image's id
    "env_image_tag": pl.Utf8,            # the agent image's tag
    "env_tcplimits_version": pl.Utf8,    # tcplimits version that ran the point
    "env_git_sha": pl.Utf8,              # the checkout's commit, when it is a git checkout
    "env_cgroup_version": pl.Utf8,       # cgroup v1 or v2 on the host
    "env_hostname": pl.Utf8,             # the host the point ran on (a cluster has several)
}

_TIME = pl.Datetime("us", "UTC")

# One row per run. Runs that did not get far (unsupported, failed early) have nulls for
# what they never reached: resolved values, prediction, totals.
RUNS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,                      # the point's run: its directory's name
    "status": pl.Utf8,                      # ok | failed | unsupported
    "reason": pl.Utf8,                      # why, when not ok
    **PARAMS_SCHEMA,                        # what was asked
    "port_lo": pl.Int64,                    # lowest port of the range
    "port_hi": pl.Int64,                    # highest port of the range
    "port_count": pl.Int64,                 # ports in the range
    "resolved_server_nofile": pl.Int64,     # server_nofile after defaults (the engine cap)
    "resolved_server_workers": pl.Int64,    # server_workers after "auto"
    "predicted_total": pl.Int64,            # model: connections all clients should hold
    "predicted_per_client": pl.List(pl.Int64), # model: the same, per client container
    "predicted_limit": pl.Utf8,             # the term that wins: ports, descriptors, ...
    "predicted_errno": pl.Utf8,             # errno name the clients should stop with
    "predicted_server_accepted": pl.Int64,  # model: connections the server should accept
    "predicted_client_capacity": pl.Int64,  # one client with an unbounded server
    "predicted_server_capacity": pl.Int64,  # server accepts + accept queue
    "connections_total": pl.Int64,          # measured: sum over client processes
    "server_accepted": pl.Int64,            # measured: sum over server workers
    "started_at": _TIME,                    # when the run started (UTC)
    "ended_at": _TIME,                      # when it ended (UTC)
    "duration_s": pl.Float64,               # seconds from start to end
    "setup_s": pl.Float64,                  # of those, creating the network and containers
    "quiet_wait_s": pl.Float64,             # waited for a quiet host before connecting
    "connect_s": pl.Float64,                # connecting, until every client process stopped
    "teardown_s": pl.Float64,               # removing the containers and the network
    "noisy": pl.Boolean,                    # host not quiet, or SYNs dropped: times suspect
    "noisy_reason": pl.Utf8,                # why the run is noisy
    "host_orphan_at_connect": pl.Int64,     # host kernel (tcplimits.engine.host) when connecting
    "host_tw_at_connect": pl.Int64,         # TIME_WAIT sockets on the host when connecting
    "host_conntrack_at_connect": pl.Int64,  # the host's conntrack entries when connecting
    "host_orphan_after": pl.Int64,          # ... and once the run had returned
    "held_ports": pl.List(pl.Int64),        # per client: ports of the range held at start
    "held_sockets": pl.Utf8,                # run.json facts.held_sockets as JSON text:
                                            # {client: [{addr, port, state, owner}]}
    "somaxconn": pl.Int64,                  # net.core.somaxconn measured in the server container
    # What the held connections cost the host (run.json "footprint", issue 10).
    "kernel_bytes_per_connection": pl.Int64,    # containers' cgroup kmem, both ends
    "user_bytes_per_connection": pl.Int64,      # containers' cgroup rss (the agents)
    "host_slab_bytes_per_connection": pl.Int64, # host Slab growth (all of the host: noisy)
    "host_tcp_mem_pages_per_connection": pl.Float64, # host tcp_mem pages per connection
    "conntrack_server_namespace": pl.Int64,     # entries in the server's namespace, held
    "conntrack_host_run": pl.Int64,             # entries of this run in the host's table
    "conntrack_host_count": pl.Int64,           # the host table's count, held (everything)
    "host_limits": pl.Utf8,                     # run.json host_limits as JSON
    "host_limit": pl.Utf8,                      # the host setting that stops the point, if any
    "host_limit_stops_at": pl.Int64,        # connections at which host_limit stops the point
    "ceiling": pl.Utf8,                         # run.json ceiling as JSON: connections asked
                                                # (a number or "ceiling") resolved (issue 22)
    **{f"churn_{k}": v for k, v in {        # mode churn (run.json "churn"); null for hold
        "connections": pl.Int64,            # measured: opened and closed, all processes
        "rate": pl.Float64,                 # measured: connections per second sustained
        "stopped_at_s": pl.Float64,         # measured: first process stopped by an error
        "stop_error": pl.Utf8,              # measured: what stopped it (null: ran its duration)
        "agrees": pl.Boolean,               # the verdict: as the model said
        "verdict": pl.Utf8,                 # the verdict's sentence
        "predicted_rate": pl.Float64,       # model: sustainable per s, all clients; null: no bound
        "predicted_stops": pl.Boolean,      # model: whether an error stops the clients
        "predicted_stop_after": pl.Int64,   # model: connections when the clients stop
        "predicted_stop_at_s": pl.Float64,  # model: seconds after the start when they stop
        "predicted_errno": pl.Utf8,         # model: the errno name they stop with
        "predicted_limit": pl.Utf8,         # time_wait, tw_reuse_delay, rate or loop
        "predicted_client_time_wait": pl.Int64,  # per client container
        "predicted_server_time_wait": pl.Int64, # per server container
    }.items()},
    **NAT_SCHEMA,                           # behind a NAT (run.json "nat"); null if direct
    **ENV_SCHEMA,
    "run_dir": pl.Utf8,                     # where the run directory was read from
}

# Parameter columns joined (on run_id) onto every row of the per-run tables.
PARAM_COLUMNS = ["port_range", "port_count", "nofile", "procs", "clients", "server_nofile",
                 "resolved_server_nofile", "server_workers", "backlog", "max_connections",
                 "server_ports", "server_addrs", "client_addrs", "bind_mode",
                 "mode", "rate", "duration", "closer", "tw_reuse", "tw_reuse_delay", "timestamps",
                 "server", "worker_connections", "worker_processes", "maxclients",
                 "server_port_range", "settle"]


def _with_params(schema: dict[str, pl.DataType]) -> dict[str, pl.DataType]:
    return {**schema, **{c: RUNS_SCHEMA[c] for c in PARAM_COLUMNS}}


CLIENTS_SCHEMA = _with_params(results.CLIENTS_SCHEMA)
SERVER_SCHEMA = _with_params(results.SERVER_SCHEMA)
SERIES_SCHEMA = _with_params(results.SERIES_SCHEMA)
DESTINATIONS_SCHEMA = _with_params(results.DESTINATIONS_SCHEMA)
CHURN_SCHEMA = _with_params(results.CHURN_SCHEMA)
REALSERVER_SCHEMA = _with_params(results.REALSERVER_SCHEMA)

TABLES = {  # dataset name -> (run directory file, dataset schema)
    "clients": (results.CLIENTS_FILE, CLIENTS_SCHEMA),
    "server": (results.SERVER_FILE, SERVER_SCHEMA),
    "series": (results.SERIES_FILE, SERIES_SCHEMA),
    "destinations": (results.DESTINATIONS_FILE, DESTINATIONS_SCHEMA),
    "churn": (results.CHURN_FILE, CHURN_SCHEMA),
    "realserver": (results.REALSERVER_FILE, REALSERVER_SCHEMA),
}
# The dataset's tables, each <name>.parquet: the one list the renderer and the workflow use.
TABLE_NAMES = ("runs", *TABLES)
SCHEMAS = {"runs": RUNS_SCHEMA, **{name: schema for name, (_, schema) in TABLES.items()}}


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _cast(value: Any, dtype: pl.DataType) -> Any:
    """A run.json value as the column's type; what cannot be read becomes null."""
    if value is None:
        return None
    if dtype == pl.Int64:
        return _int(value)
    if dtype == pl.Float64:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if dtype == pl.Utf8:
        if isinstance(value, (dict, list)):
            return json.dumps(value, default=str)
        return str(value)
    if dtype == _TIME:
        return _time(value)
    if dtype == pl.Boolean:
        return value if isinstance(value, bool) else None
    if isinstance(dtype, pl.List):
        return [_int(v) for v in value] if isinstance(value, list) else None
    return value


def run_row(record: dict, run_dir: Path) -> dict[str, Any]:
    """One row of runs.parquet from a run.json record (missing keys -> nulls)."""
    params = record.get("params") or {}
    resolved = record.get("resolved") or {}
    prediction = record.get("prediction") or {}
    totals = record.get("totals") or {}
    held = record.get("held_ports")
    facts = record.get("facts") or {}
    row: dict[str, Any] = {
        "run_id": record.get("run_id") or run_dir.name,
        "status": record.get("status"),
        "reason": record.get("reason"),
        # A run made before a parameter existed ran with its default.
        **{name: params.get(name, FIELDS[name].default) for name in PARAMS_SCHEMA},
        "resolved_server_nofile": resolved.get("server_nofile"),
        "resolved_server_workers": resolved.get("server_workers"),
        "predicted_total": prediction.get("total"),
        "predicted_per_client": prediction.get("per_client"),
        "predicted_limit": prediction.get("limit"),
        "predicted_errno": prediction.get("errno"),
        "predicted_server_accepted": prediction.get("server_accepted"),
        "predicted_client_capacity": prediction.get("client_capacity"),
        "predicted_server_capacity": prediction.get("server_capacity"),
        "connections_total": totals.get("connections"),
        "server_accepted": totals.get("server_accepted"),
        "held_ports": [_held_count(held[k]) for k in sorted(held, key=_client_order)]
        if isinstance(held, dict) else None,
        "held_sockets": facts.get("held_sockets"),
        "somaxconn": facts.get("somaxconn"),
        "run_dir": str(run_dir),
    }
    row.update(_churn_columns(record.get("churn")))
    row.update(nat_columns(record))
    for key in ("started_at", "ended_at", "duration_s", "setup_s", "quiet_wait_s", "connect_s",
                "teardown_s", "noisy", "noisy_reason"):
        row[key] = record.get(key)
    host_tcp = record.get("host_tcp") or {}
    at_connect, after = host_tcp.get("at_connect") or {}, host_tcp.get("after") or {}
    row["host_orphan_at_connect"] = at_connect.get("orphan")
    row["host_tw_at_connect"] = (at_connect.get("tw_all") if at_connect.get("tw_all") is not None
                                 else at_connect.get("tw"))
    row["host_conntrack_at_connect"] = at_connect.get("conntrack")
    row["host_orphan_after"] = after.get("orphan")
    row.update(_footprint_columns(record))
    lo_hi = _port_bounds(params.get("port_range"))
    if lo_hi:
        row["port_lo"], row["port_hi"] = lo_hi
        row["port_count"] = port_count(lo_hi)
    for key, value in (record.get("environment") or {}).items():
        row[f"env_{key}"] = value
    return {k: _cast(v, RUNS_SCHEMA.get(k, pl.Utf8)) for k, v in row.items()}


def _footprint_columns(record: dict) -> dict[str, Any]:
    import json

    from tcplimits.model.hostlimits import binding, from_record

    fp = record.get("footprint") or {}
    limits = record.get("host_limits") or []
    stop = binding(from_record(limits))
    return {
        **{key: fp.get(key) for key in ("kernel_bytes_per_connection",
                                        "user_bytes_per_connection",
                                        "host_slab_bytes_per_connection",
                                        "host_tcp_mem_pages_per_connection")},
        "conntrack_server_namespace": fp.get("server_namespace_conntrack"),
        "conntrack_host_run": fp.get("host_conntrack_run"),
        "conntrack_host_count": fp.get("host_conntrack_count"),
        "host_limits": json.dumps(limits) if limits else None,
        "host_limit": stop.setting if stop else None,
        "host_limit_stops_at": stop.stops_at if stop else None,
        "ceiling": json.dumps(record["ceiling"]) if record.get("ceiling") else None,
    }


def _churn_columns(churn: Any) -> dict[str, Any]:
    """run.json's "churn" block as churn_* columns (all clients together)."""
    if not isinstance(churn, dict):
        return {}
    verdict = churn.get("verdict") or {}
    # the verdict's prediction knows the run's own loop speed (rate max); else the run's
    pred = verdict.get("prediction") or churn.get("prediction") or {}
    rates = pred.get("sustainable_rate") or []
    stops = [v for v in pred.get("stop_after") or [] if v is not None]
    times = [v for v in pred.get("stop_at_s") or [] if v is not None]
    return {
        "churn_connections": verdict.get("connections"),
        "churn_rate": verdict.get("rate"),
        "churn_stopped_at_s": verdict.get("stopped_at_s"),
        "churn_stop_error": next((k for k in verdict.get("errnos") or {}
                                  if k != churn_model.DURATION), None),
        "churn_agrees": verdict.get("agrees"),
        "churn_verdict": verdict.get("sentence"),
        "churn_predicted_rate": sum(rates) if rates and None not in rates else None,
        "churn_predicted_stops": pred.get("stops"),
        "churn_predicted_stop_after": sum(stops) if stops else None,
        "churn_predicted_stop_at_s": min(times) if times else None,
        "churn_predicted_errno": pred.get("errno"),
        "churn_predicted_limit": pred.get("limit"),
        "churn_predicted_client_time_wait": (pred.get("client_time_wait") or [None])[0],
        "churn_predicted_server_time_wait": pred.get("server_time_wait"),
    }


def _held_count(value: Any) -> int | None:
    """run.json lists the held ports; a bare count is accepted too."""
    return len(value) if isinstance(value, list) else _int(value)


def _client_order(key: Any) -> tuple[int, str]:
    number = _int(key)
    return (number if number is not None else 1 << 30, str(key))


def _port_bounds(value: Any) -> tuple[int, int] | None:
    from tcplimits.config.params import ParamError, parse_port_range

    try:
        return parse_port_range(value)
    except ParamError:
        return None


def _read_record(run_dir: Path) -> dict:
    """run.json, or a failed record that says why it could not be read."""
    try:
        record = results.read_record(run_dir)
    except (OSError, ValueError) as err:
        present = sorted(p.name for p in run_dir.glob("*.parquet")) if run_dir.is_dir() else []
        return {"run_id": run_dir.name, "status": results.STATUS_FAILED,
                "reason": f"no readable {results.RUN_JSON} in {run_dir}: "
                          f"{getattr(err, 'strerror', None) or err}"
                          + (f" (partial run: {', '.join(present)} without it)" if present
                             else "")}
    problem = _table_problem(run_dir, record) if record.get("status") == results.STATUS_OK \
        else None
    if problem:
        record = {**record, "status": results.STATUS_FAILED,
                  "reason": f"corrupt run directory {run_dir}: {problem}"}
    return record


def _table_problem(run_dir: Path, record: dict) -> str | None:
    """What makes an ok run's tables unusable: a file missing or unreadable, or rows of
    another run."""
    for file in results.SCHEMAS:
        if not (run_dir / file).exists():
            if file in results.LATER_FILES:
                continue
            return f"{file} is missing"
        try:
            ids = results.read_table(run_dir, file).get_column("run_id").unique().to_list()
        except Exception as err:  # polars raises several kinds for a damaged file
            return f"{file} is unreadable ({type(err).__name__}: {str(err).splitlines()[0]})"
        strangers = sorted(str(i) for i in ids if i != record.get("run_id"))
        if strangers:
            return (f"{file} holds rows of run {', '.join(strangers[:3])}, not of "
                    f"{record.get('run_id')}")
    return None


def conform(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """The schema's columns first, in order and type (missing ones null), then any others."""
    cols = [
        (pl.col(name).cast(dtype, strict=False) if name in df.columns
         else pl.lit(None, dtype=dtype)).alias(name)
        for name, dtype in schema.items()
    ]
    extra = [c for c in df.columns if c not in schema]
    return df.select(cols + extra)


def runs_frame(run_dirs: Iterable[Path], report=lambda message: None) -> pl.DataFrame:
    """One row per run directory; ``report`` hears of every directory recorded as failed
    because it is partial or corrupt."""
    rows, seen = [], {}
    for run_dir in run_dirs:
        record = _read_record(run_dir)
        if record.get("run_id") in seen:
            record = {"run_id": str(run_dir), "status": results.STATUS_FAILED,
                      "params": record.get("params"),
                      "reason": f"run id {record['run_id']!r} is also the id of "
                                f"{seen[record['run_id']]}: a copy, or two runs in one place"}
        try:
            row = run_row(record, run_dir)
        except Exception as err:  # a block of the right type holding what no version wrote
            record = {"run_id": str(record.get("run_id") or run_dir.name),
                      "status": results.STATUS_FAILED,
                      "reason": f"no readable {results.RUN_JSON} in {run_dir}: "
                                f"{type(err).__name__}: {str(err)[:200]}"}
            row = run_row(record, run_dir)
        if str(record.get("reason") or "").startswith(("no readable", "corrupt", "run id")):
            report(f"{run_dir}: {record['reason']}; recorded as failed")
        if row["status"] != results.STATUS_OK:  # partial counts are not measurements
            row.update(connections_total=None, server_accepted=None)
        seen[row["run_id"]] = run_dir
        rows.append(row)
    extra = sorted({k for r in rows for k in r} - set(RUNS_SCHEMA))  # new env_ keys
    schema = {**RUNS_SCHEMA, **{k: pl.Utf8 for k in extra}}
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


def table_frame(runs: pl.DataFrame, name: str) -> pl.DataFrame:
    """One per-run table over all runs, with the parameter columns joined on run_id."""
    file, schema = TABLES[name]
    base = results.SCHEMAS[file]
    parts = []
    ok = runs.filter(pl.col("status") == results.STATUS_OK)
    for run_id, run_dir in ok.select("run_id", "run_dir").iter_rows():
        part = results.read_table(run_dir, file)
        if part.height:
            # The run directory's own id wins: a table copied from elsewhere still joins.
            parts.append(conform(part, base).with_columns(pl.lit(run_id).alias("run_id")))
    table = (pl.concat(parts, how="diagonal_relaxed") if parts
             else pl.DataFrame(schema=base))
    params = runs.select("run_id", *PARAM_COLUMNS)
    return conform(table.drop([c for c in PARAM_COLUMNS if c in table.columns])
                   .join(params, on="run_id", how="left"), schema)


def build_dataset(run_dirs: Iterable[str | Path], out_dir: str | Path,
                  report=lambda message: None) -> dict[str, int]:
    """Write runs/clients/server/series.parquet into ``out_dir``; returns rows per file."""
    out_dir = Path(out_dir)
    unique = list(dict.fromkeys(Path(d) for d in run_dirs))  # same directory twice: once
    runs = runs_frame(unique, report)
    frames = {name: runs if name == "runs" else table_frame(runs, name) for name in TABLE_NAMES}
    for name, df in frames.items():
        results.write_parquet(df, out_dir / f"{name}.parquet")
    return {name: df.height for name, df in frames.items()}
