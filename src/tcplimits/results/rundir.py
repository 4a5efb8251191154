"""The run directory: the contract between one experiment, the workflow and the report.

One place documents every file and column. Every file is written atomically (a temp file in
the same directory, then rename), so a reader never sees half a file and an interrupted run
leaves no partial result behind.

    <run dir>/
      run.json          run id, parameters, status + reason, times, environment, facts
      clients.parquet   one row per client process (CLIENTS_SCHEMA)
      server.parquet    one row per server worker  (SERVER_SCHEMA)
      series.parquet    progress samples            (SERIES_SCHEMA)
      churn.parquet     per-second churn series     (CHURN_SCHEMA; empty for mode hold)
      destinations.parquet  connections per client process and (source address, server
                        address, server port) pair (DESTINATIONS_SCHEMA)
      realserver.parquet  real servers (issue 21): REALSERVER_SCHEMA; empty for the agent
      compose.yml       a docker-compose file that reproduces the run by hand
      logs/<container>.log   each container's output

run.json keys:
    run_id        the run's id (the workflow passes its point id; `tcplimits run` makes one)
    status        "ok" | "failed" | "unsupported"; reason: why, when not ok (else null)
    fault         what kind of fault failed the run (engine/faults.py: engine_unreachable,
                  engine_lost, container_exited, oom, worker_died, agent_output,
                  out_unwritable), else null
    params        RunParams.to_dict(): what was asked, never changed
    resolved      what "auto"/defaults became: server_nofile, server_workers, sample_every,
                  server_cpu_shares (the server container's cpu.shares)
    prediction    model.predict(...) as a dict: from the parameters, the engine facts and the
                  ports the agents found held before their first connect()
    started_at, ended_at (ISO 8601 UTC), duration_s, setup_s, quiet_wait_s, connect_s,
                  teardown_s
    host_tcp      the host's TCP state (tcplimits.engine.host.read_state) before the run, when it
                  started connecting (at_connect) and after it returned
    noisy         true when its times are suspect: the host was not quiet when connecting,
                  or the server dropped SYNs (facts.listen_drops) where the model does not
                  make the server the limit; noisy_reason says why ("; " between reasons);
                  null when the run never got to connect
    environment   kernel, docker_version, storage_driver, engine_nofile_cap, nf_conntrack_max,
                  image_id, image_tag, tcplimits_version, git_sha, cgroup_version, hostname
    totals        connections (sum over client processes), server_accepted (sum over workers)
    held_ports    {client number: [ports in the range held in its namespace at start]}
    addresses     network: the experiment network's IPAM (subnet, ip_range, gateway);
                  plan: the extra addresses planned per role (null when none);
                  containers: {role: every IPv4 address it had, Docker's first}
    privileges    agents: {role: cap_drop, cap_add, user, capabilities (the client agents'
                  own capability sets, hex)}; helpers: one entry per NET_ADMIN helper that
                  added addresses (target, helper, user, cap_add, cap_drop, network_mode,
                  added, addresses_after, duration_s)
    facts         what the engine measured, from which tcplimits.model explains the outcome
                  (explanations are made by the model, never stored):
                    held_sockets   {client number: [{addr, port, state, owner}]}: sockets with
                                   a port in the range, held before the first connect(); owner
                                   "docker-dns" for 127.0.0.11, else null (unknown)
                    somaxconn      net.core.somaxconn read in the server container (null if
                                   the server never listened)
                    listen_drops   SYNs the server's namespace dropped at its listeners during
                                   the run (TcpExt ListenDrops; null if not read)
                    server_workers [{worker, accepted, errno, error, message, accept_errors}]:
                                   each server worker's outcome
    churn         mode churn only: {"prediction": churn_model.ChurnPrediction as a dict,
                  "verdict": churn_model.ChurnVerdict as a dict (null unless status ok)};
                  through the NAT, "nat": model.natchurn.NatChurnPrediction, and the verdict's
                  agrees and sentence are the NAT's (the direct ones under verdict.direct)

In mode churn, clients.parquet's ``connections`` counts the connections each process opened
and closed, ``error`` is DURATION for a process that churned to the end, else the errno
that stopped it, and ``elapsed_s`` is when it stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import polars as pl

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_UNSUPPORTED = "unsupported"

RUN_JSON = "run.json"
CLIENTS_FILE = "clients.parquet"
SERVER_FILE = "server.parquet"
SERIES_FILE = "series.parquet"
CHURN_FILE = "churn.parquet"
DESTINATIONS_FILE = "destinations.parquet"
REALSERVER_FILE = "realserver.parquet"
COMPOSE_FILE = "compose.yml"
LOGS_DIR = "logs"
# Beside the report's index.html: the sweep's summary in plain text (`tcplimits report`).
SUMMARY_FILE = "summary.txt"

# One row per client process.
CLIENTS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,         # the run
    "client": pl.Int32,        # client container, 1-based
    "proc": pl.Int32,          # process within the container, 1-based
    "client_ip": pl.Utf8,      # the container's address on the network
    "connections": pl.Int64,   # connections held when it stopped: still established when
                               # checked, a short settle after its last connect()
    "errno": pl.Int32,         # errno of the connect/socket call that stopped it; null if none
    "error": pl.Utf8,          # errno name (EADDRNOTAVAIL, EMFILE, ETIMEDOUT, ...) or a stop reason
    "message": pl.Utf8,        # strerror or the exception text
    "elapsed_s": pl.Float64,   # from the process's start to its stop
    "cpu_s": pl.Float64,       # CPU (user + system) the process used meanwhile: unlike elapsed_s,
                               # not lengthened by other load on the machine
    "held_ports": pl.Int32,    # ports in the range already held in the container's namespace at start
    "held_other_addr": pl.Int32,  # of those, bound to a specific address the client never
                                  # leaves from (127.0.0.11): bind((source, 0)) may take them
    # The held check (issue 21): a server may accept a connection and then close it.
    "opened": pl.Int64,        # connect() calls that succeeded (held + closed_by_peer)
    "closed_by_peer": pl.Int64,  # opened, then closed (FIN) or reset by the peer before the check
    "peer_message": pl.Utf8,   # the first bytes a closing peer sent (Redis: "-ERR max number
                               # of clients reached"), as text; null if none
}

# One row per client process and (source, destination) pair it spread over; round-robin in
# this order (see tcplimits.model.fourtuple). Runs before the 4-tuple parameters have no file.
DESTINATIONS_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,         # the run
    "client": pl.Int32,        # client container, 1-based
    "proc": pl.Int32,          # process within the container, 1-based
    "source": pl.Utf8,         # source address the pair's connections left from (null if none)
    "server_addr": pl.Utf8,    # the server address of the pair
    "server_port": pl.Int32,   # the server port of the pair
    "connections": pl.Int64,   # connections of this pair held when the process stopped (churn: opened)
    "error": pl.Utf8,          # errno name that ended the pair (its pool ran out), or null
}

# One row per server worker.
SERVER_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,         # the run
    "worker": pl.Int32,        # 1-based
    "accepted": pl.Int64,      # connections accepted and held
    "errno": pl.Int32,         # first accept() error (EMFILE when out of descriptors); null if none
    "error": pl.Utf8,          # errno name of that error
    "message": pl.Utf8,        # strerror of it
    "accept_errors": pl.Int64, # how many accept() calls failed
}

# Progress samples: one per 0.5% of the expected count, plus the last connection.
SERIES_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,                # the run
    "client": pl.Int32,               # client container, 1-based
    "proc": pl.Int32,                 # process within the container, 1-based
    "connections": pl.Int64,          # connections held at this sample
    "t_s": pl.Float64,                # seconds since the process started connecting
    "connect_latency_s": pl.Float64,  # mean connect() time over the connections since the last sample
}

# Mode churn: one row per second of each client process (role "client", proc set: opened,
# errors, error, connect_latency_s) and one per second-ish sample of each container's
# TIME_WAIT count (role "client" with proc null, or role "server": time_wait).
CHURN_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,                # the run
    "role": pl.Utf8,                  # "client" or "server"
    "client": pl.Int32,               # client container; null for the server
    "proc": pl.Int32,                 # process of a per-second row; null for a TIME_WAIT row
    "t_s": pl.Float64,                # seconds since the engine started the clients
    "opened": pl.Int64,               # connections opened (and closed) in this second
    "errors": pl.Int64,               # failed attempts in this second (the loop stops at one)
    "error": pl.Utf8,                 # errno name of that failure
    "connect_latency_s": pl.Float64,  # mean connect() time over the second's connections
    "time_wait": pl.Int64,            # TIME_WAIT sockets in the container's namespace
}

# Real servers (issue 21): one row per run whose server is nginx, nginx-proxy or redis
# (tcplimits.engine.servers.row; run.json's "server" block holds the full record).
REALSERVER_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8,         # the run
    "server": pl.Utf8,             # nginx, nginx-proxy, redis
    "package_version": pl.Utf8,    # the Debian package's version (dpkg)
    "version": pl.Utf8,            # what the server says (nginx -v, redis-server --version)
    "workers": pl.Int64,           # the server's processes (nginx workers; Redis 1)
    "effective": pl.Utf8,          # JSON: the settings in force, as the server reports them
    "held": pl.Int64,              # connections the clients held (established when counted)
    "opened": pl.Int64,            # connect() calls that succeeded
    "closed_by_peer": pl.Int64,    # accepted, then closed by the server
    "peer_message": pl.Utf8,       # what the server wrote before closing (Redis), or null
    "established": pl.Int64,       # the server namespace's established connections on its port
    "queued": pl.Int64,            # of them, still in the accept queue
    "upstream": pl.Int64,          # nginx-proxy: established toward the upstream
    "upstream_accepted": pl.Int64, # nginx-proxy: what the upstream agent server accepted
    "limit_log": pl.Utf8,          # the server's own log line at the limit, or null
    "limit_log_count": pl.Int64,   # lines of that kind it logged
    "predicted_low": pl.Int64,     # tcplimits.model.servers: fewest held
    "predicted_high": pl.Int64,    # most held
    "bound": pl.Utf8,              # worker_connections, maxclients, upstream_ports, clients
    "raise_with": pl.Utf8,         # the setting that raises it
    "agrees": pl.Boolean,          # held within [predicted_low, predicted_high]
}

SCHEMAS = {CLIENTS_FILE: CLIENTS_SCHEMA, SERVER_FILE: SERVER_SCHEMA, SERIES_FILE: SERIES_SCHEMA,
           DESTINATIONS_FILE: DESTINATIONS_SCHEMA, CHURN_FILE: CHURN_SCHEMA,
           REALSERVER_FILE: REALSERVER_SCHEMA}
# Tables that run directories written before they existed lack: their absence is not damage
# (read_table gives an empty frame of the schema).
LATER_FILES = frozenset({DESTINATIONS_FILE, CHURN_FILE, REALSERVER_FILE})


def frame(rows: Iterable[dict[str, Any]], schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Rows (dicts) -> a frame with exactly the schema's columns and types."""
    rows = [{k: r.get(k) for k in schema} for r in rows]
    return pl.DataFrame(rows, schema=schema, orient="row")


def _umask() -> int:
    """The process's umask, read without setting it: os.umask(0) then back would leave a
    moment in which another thread creates files open to everyone."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022  # no /proc (or a kernel before 4.7): the usual default


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet(df: pl.DataFrame, path: str | Path) -> None:
    _atomic(Path(path), lambda tmp: df.write_parquet(tmp))


def write_parquet_rows(rows: Iterable[dict[str, Any]], schema: dict[str, pl.DataType],
                       path: str | Path, chunk_rows: int = 100_000) -> int:
    """Rows (dicts, from any iterable) to one Parquet file with exactly ``schema``, holding at
    most ``chunk_rows`` of them in memory at a time (mode churn's seconds may be millions);
    returns the number of rows."""
    count = 0
    with tempfile.TemporaryDirectory(prefix="tcplimits-parts-") as parts:
        batch: list[dict[str, Any]] = []
        names = []

        def flush() -> None:
            names.append(f"{parts}/{len(names):06d}.parquet")
            frame(batch, schema).write_parquet(names[-1])
            batch.clear()

        for row in rows:
            batch.append(row)
            count += 1
            if len(batch) >= chunk_rows:
                flush()
        if batch or not names:
            flush()
        # The streaming engine reads the parts a batch at a time into the one file.
        _atomic(Path(path), lambda tmp: pl.scan_parquet(names).sink_parquet(tmp))
    return count


def write_text(text: str, path: str | Path) -> None:
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_json(data: Any, path: str | Path) -> None:
    write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", path)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RUN_JSON).read_text())


# run.json's keys and the JSON type each must have (null allowed): a record of another
# version, or edited by hand, must be a failed run with the reason, never a failed dataset.
RECORD_TYPES: dict[str, type] = {
    "run_id": str, "status": str, "reason": str, "params": dict, "resolved": dict,
    "prediction": dict, "totals": dict, "facts": dict, "environment": dict, "host_tcp": dict,
    "footprint": dict, "churn": dict, "held_ports": dict, "host_limits": list, "host": dict,
    "noisy": bool, "noisy_reason": str,
}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def record_problem(record: Any) -> str | None:
    """What makes ``record`` no run.json this version reads, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    for key, kind in RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and not isinstance(value, kind):
            return f"{key} is {type(value).__name__} {str(value)[:60]!r}, not {kind.__name__}"
    statuses = (STATUS_OK, STATUS_FAILED, STATUS_UNSUPPORTED)
    if record.get("status") not in statuses:
        return f"status {record.get('status')!r} is none of {', '.join(statuses)}"
    if not all(isinstance(v, dict) for v in record.get("host_limits") or []):
        return "host_limits holds something other than objects"
    return None


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """run.json, checked: ValueError saying what is wrong (NaN or Infinity, which Python's
    json would take, a key of the wrong type, an unknown status); OSError when unreadable."""
    record = json.loads((Path(run_dir) / RUN_JSON).read_text(), parse_constant=_refuse_constant)
    problem = record_problem(record)
    if problem:
        raise ValueError(problem)
    return record


def read_table(run_dir: str | Path, name: str) -> pl.DataFrame:
    """One of the run's Parquet files; an empty frame of the right schema when absent."""
    path = Path(run_dir) / name
    if path.exists():
        return pl.read_parquet(path)
    return pl.DataFrame(schema=SCHEMAS[name])
