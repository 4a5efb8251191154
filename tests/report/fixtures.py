"""A small synthetic dataset in the shape of results/dataset/, for the report's tests.

The values follow what the experiments measure on a Docker host (see shared/docs/limits.md):
one port of every client's range is held by Docker's embedded DNS listener, processes get
nofile - 3 sockets, a server out of descriptors lets clients count backlog + 1 (and a couple
of handshakes) more than it accepted. Tables are conformed to tcplimits.results.dataset's schemas,
so a renamed column shows up here first.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from tcplimits.results import dataset
from tcplimits import model
from tcplimits.config.params import RunParams
from tcplimits.results import write_parquet

ENGINE_NOFILE_CAP = 20000
ENV = {
    "env_kernel": "6.18.0-1-amd64",
    "env_docker_version": "28.5.1",
    "env_storage_driver": "overlay2",
    "env_engine_nofile_cap": ENGINE_NOFILE_CAP,
    "env_nf_conntrack_max": 262144,
    "env_image_id": "sha256:3f1c9a0e6b7d",
    "env_image_tag": "tcplimits-agent:5d41402a",
    "env_tcplimits_version": "0.1.0",
    "env_git_sha": "1a2b3c4",
    "env_cgroup_version": "2",
    "env_hostname": "node1",
}
T0 = datetime(2025, 11, 25, 11, 10, tzinfo=timezone.utc)

# run_id, params, status, reason, per process (client, proc, connections, error),
# per server worker (accepted, error).
POINTS = [
    ("seed-default", dict(port_range="32768-60999", nofile=15000, procs=2, clients=2), "ok",
     None, [(1, 1, 14116, "EADDRNOTAVAIL"), (1, 2, 14115, "EADDRNOTAVAIL"),
            (2, 1, 14120, "EADDRNOTAVAIL"), (2, 2, 14111, "EADDRNOTAVAIL")],
     [(18821, None), (18821, None), (18820, None)]),
    ("seed-wide-range", dict(port_range="1024-65535", nofile=15000, procs=5, clients=1), "ok",
     None, [(1, 1, 12903, "EADDRNOTAVAIL"), (1, 2, 12903, "EADDRNOTAVAIL"),
            (1, 3, 12903, "EADDRNOTAVAIL"), (1, 4, 12903, "EADDRNOTAVAIL"),
            (1, 5, 12899, "EADDRNOTAVAIL")],
     [(16128, None), (16128, None), (16128, None), (16127, None)]),
    ("range-1000", dict(port_range="40000-40999", nofile=15000), "ok", None,
     [(1, 1, 999, "EADDRNOTAVAIL")], [(999, None)]),
    ("shared-pool", dict(port_range="40000-40999", nofile=600, procs=2), "ok", None,
     [(1, 1, 597, "EMFILE"), (1, 2, 402, "EADDRNOTAVAIL")], [(999, None)]),
    ("short-timeout", dict(port_range="40000-40999", nofile=15000, connect_timeout=0.1),
     "ok", None, [(1, 1, 812, "ETIMEDOUT")], [(812, None)]),
    ("nofile-300", dict(port_range="32768-60999", nofile=300), "ok", None,
     [(1, 1, 297, "EMFILE")], [(297, None)]),
    ("server-1024", dict(port_range="32768-60999", nofile=15000, clients=2, server_nofile=1024,
                         server_workers=1, backlog=128), "ok", None,
     [(1, 1, 575, "ETIMEDOUT"), (2, 1, 576, "ETIMEDOUT")], [(1020, "EMFILE")]),
    ("seed-nofile-100000", dict(port_range="32768-60999", nofile=100000, clients=2),
     "unsupported", "engine allows nofile up to 20000; asked 100000; use more --procs",
     [], []),
    ("broken-server", dict(port_range="40000-40999", nofile=1000), "failed",
     "server container exited with code 1 before it listened; see logs/server.log", [], []),
]


def _latency(fill: float, port_bound: bool) -> float:
    """Mean connect() time in seconds: the port search slows down past half the range."""
    if not port_bound or fill < 0.5:
        return 14e-6 + 2e-6 * fill
    return 14e-6 + 420e-6 * (fill - 0.5) ** 1.2 * 2


def _tables(root: Path) -> dict[str, pl.DataFrame]:
    runs, clients, server, series = [], [], [], []
    for i, (run_id, values, status, reason, procs, workers) in enumerate(POINTS):
        params = RunParams.from_mapping(values)
        server_nofile = params.server_nofile or ENGINE_NOFILE_CAP
        n_workers = (model.auto_server_workers(params, server_nofile)
                     if params.server_workers == "auto" else params.server_workers)
        held = [1] * params.clients  # Docker's DNS listener, one port per client namespace
        # As the engine does: predict once the held ports are known.
        pred = model.predict(params, server_nofile=server_nofile, server_workers=n_workers,
                             held_ports=held, conntrack_max=ENV["env_nf_conntrack_max"])
        ok = status == "ok"
        total = sum(p[2] for p in procs) if ok else None
        accepted = sum(w[0] for w in workers) if ok else None
        start = T0 + timedelta(minutes=2 * i)
        params_cols = {**params.to_dict(), "server_workers": str(params.server_workers),
                       "port_lo": params.port_lo, "port_hi": params.port_hi,
                       "port_count": params.port_count,
                       "resolved_server_nofile": server_nofile,
                       "resolved_server_workers": n_workers}
        # As the engine records them: Docker's DNS listener, one port per client namespace.
        held_sockets = {str(c): [{"addr": "127.0.0.11", "port": params.port_lo + 719,
                                  "state": "LISTEN", "owner": "docker-dns"}]
                        for c in range(1, params.clients + 1)} if ok else None
        predicted = {  # runs that never started have no resolved values nor prediction
            "resolved_server_nofile": server_nofile, "resolved_server_workers": n_workers,
            "predicted_total": pred.total, "predicted_per_client": pred.per_client,
            "predicted_limit": pred.limit, "predicted_errno": pred.errno,
            "predicted_server_accepted": pred.server_accepted,
        }
        runs.append({
            "run_id": run_id, "status": status, "reason": reason, **params_cols,
            **{k: v if ok else None for k, v in predicted.items()},
            "connections_total": total, "server_accepted": accepted,
            "started_at": start, "ended_at": start + timedelta(seconds=47 if ok else 3),
            "duration_s": 47.0 if ok else 3.1, "setup_s": 2.4, "teardown_s": 1.2,
            "held_ports": held if ok else None,
            "held_sockets": json.dumps(held_sockets) if ok else None,
            "somaxconn": 4096 if ok else None, **ENV,
            "run_dir": str(root / "runs" / run_id),
        })
        param_row = {k: params_cols[k] for k in dataset.PARAM_COLUMNS}
        port_bound = pred.limit == model.PORTS
        for c, p, n, err in procs:
            errno = {"EADDRNOTAVAIL": 99, "EMFILE": 24, "ETIMEDOUT": 110}[err]
            clients.append({"run_id": run_id, "client": c, "proc": p,
                            "client_ip": f"172.28.{i}.{10 + c}", "connections": n,
                            "errno": errno, "error": err, "message": err.lower(),
                            "elapsed_s": 40.0 + c + p, "held_ports": 1, **param_row})
            t = 0.0
            for k in range(1, 101):
                conns = math.ceil(n * k / 100)
                fill = min(1.0, conns * params.procs / params.port_count)
                lat = _latency(fill, port_bound)
                t += lat * n / 100
                series.append({"run_id": run_id, "client": c, "proc": p, "connections": conns,
                               "t_s": round(t, 6), "connect_latency_s": lat, **param_row})
        for w, (n, err) in enumerate(workers, 1):
            server.append({"run_id": run_id, "worker": w, "accepted": n,
                           "errno": 24 if err else None, "error": err,
                           "message": "Too many open files" if err else None,
                           "accept_errors": 1 if err else 0, **param_row})
    tables = {"runs": (runs, dataset.RUNS_SCHEMA), "clients": (clients, dataset.CLIENTS_SCHEMA),
              "server": (server, dataset.SERVER_SCHEMA), "series": (series, dataset.SERIES_SCHEMA)}
    return {name: dataset.conform(pl.DataFrame(rows, infer_schema_length=None)
                                  if rows else pl.DataFrame(), schema)
            for name, (rows, schema) in tables.items()}


def synthetic_dataset(out: Path, kind: str = "full") -> Path:
    """Write runs/clients/server/series.parquet under ``out`` and return ``out``.

    kind: "full" (every outcome), "failed" (only failed and unsupported runs), "empty"
    (the four files with no rows)."""
    tables = _tables(out)
    if kind == "failed":
        keep = tables["runs"].filter(pl.col("status") != "ok")["run_id"]
        tables = {k: v.filter(pl.col("run_id").is_in(keep.implode())) for k, v in tables.items()}
    elif kind == "empty":
        tables = {k: v.clear() for k, v in tables.items()}
    for name, df in tables.items():
        write_parquet(df, out / f"{name}.parquet")
    return out


RUN_IDS = [p[0] for p in POINTS]


# --- POINTS and the loaded dataset, for the report's tests --------------------------------------

def procs_of(run_id: str) -> list[tuple]:
    """A point's client processes: (client, proc, connections, error)."""
    return next(p[4] for p in POINTS if p[0] == run_id)


def workers_of(run_id: str) -> list[tuple]:
    """A point's server workers: (accepted, error)."""
    return next(p[5] for p in POINTS if p[0] == run_id)


def per_client_of(run_id: str) -> dict[int, int]:
    """Connections per client container of a point, its processes summed."""
    out: dict[int, int] = {}
    for client, _, n, _ in procs_of(run_id):
        out[client] = out.get(client, 0) + n
    return out


def tables_of(d) -> dict[str, pl.DataFrame]:
    """The four hold tables of a loaded ``Data``, to build a changed one from."""
    return {"runs": d.runs, "clients": d.clients, "server": d.server, "series": d.series}


def flag_noisy(d, noisy_ids, reason="host not quiet after 60 s: 9,000 orphaned and 0 TIME-WAIT "
                                    "sockets (threshold 1,000)"):
    """``d`` with the runs ``noisy_ids`` marked noisy, for ``reason``."""
    from tcplimits.report.data import Data

    runs = d.runs.with_columns(
        noisy=pl.col("run_id").is_in(noisy_ids),
        noisy_reason=pl.when(pl.col("run_id").is_in(noisy_ids)).then(pl.lit(reason)))
    return Data(runs, d.clients, d.server, d.series)


def browser_available() -> str | None:
    """None when headless Chromium can be driven here, else the reason it cannot."""
    import importlib.util
    import shutil

    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium)"
    for exe in ("chromium", "chromedriver"):
        if not shutil.which(exe) and not Path(f"/usr/bin/{exe}").exists():
            return f"{exe} is not installed (Debian packages chromium, chromium-driver)"
    return None


def _units(spec: dict):
    """Every single-view spec (one mark) inside a Vega-Lite spec: layers, concats, facets."""
    if "mark" in spec:
        yield spec
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for sub in spec.get(key, []):
            yield from _units(sub)
    if isinstance(spec.get("spec"), dict):
        yield from _units(spec["spec"])


def assert_tooltips(spec: dict) -> None:
    """Hovering is not testable offline: the spec must carry the tooltips. Every layer that
    tells its marks apart (a field in colour, shape or detail) has one, and so has at least
    one layer of the chart; each names its point (run id or label)."""
    units = list(_units(spec))
    name = (spec.get("usermeta") or {}).get("tcplimits", {}).get("chart")
    with_tip = [u for u in units if u.get("encoding", {}).get("tooltip")]
    assert with_tip, f"chart {name}: no layer has a tooltip"
    for unit in units:
        enc = unit.get("encoding", {})
        if any(isinstance(enc.get(c), dict) and "field" in enc[c]
               for c in ("color", "shape", "detail")):
            assert enc.get("tooltip"), f"chart {name}: a {unit['mark']} layer has no tooltip"
    for unit in with_tip:
        tips = unit["encoding"]["tooltip"]
        fields = {t.get("field") for t in (tips if isinstance(tips, list) else [tips])}
        if any(isinstance(unit["encoding"].get(c), dict) and "field" in unit["encoding"][c]
               for c in ("color", "shape", "detail")):
            assert fields & {"run_id", "point"}, f"chart {name}: tooltip {fields} names no point"


def chart_specs(page: str) -> list[dict]:
    """The Vega-Lite spec of every chart in a rendered page."""
    import json
    import re

    return [json.loads(m) for m in re.findall(
        r'<script\b[^>]*\bclass="tcpl-spec"[^>]*>(.*?)</script>', page, re.S)]


def assert_report(out_dir: Path, run_ids: list[str], *, browser: bool = True,
                  expect_charts: int | None = None) -> dict | None:
    """Check a rendered report directory, for any test (the workflow's end-to-end one too):
    index.html names every run id and loads nothing from elsewhere; data/ has every
    table; with ``browser``, Chromium opens it offline without a console error, every
    chart is drawn, and out_dir/screenshot.png is written. Returns the browser's findings."""
    from tcplimits.report import charts, render
    from tcplimits.report.browser import browser_check

    page = out_dir / "index.html"
    text = page.read_text()
    missing = [r for r in run_ids if r not in text]
    assert not missing, f"run ids missing from the report: {missing}"
    assert render.external_references(text) == []
    specs = chart_specs(text)
    assert len(specs) == text.count(f'class="{charts.CHART_CLASS}"')
    for spec in specs:
        assert_tooltips(spec)
    from tcplimits.results import dataset

    assert sorted(p.stem for p in (out_dir / "data").glob("*.parquet")) == sorted(
        dataset.TABLE_NAMES)
    if not browser:
        return None
    found = browser_check(page, out_dir / "screenshot.png")
    severe = [e for e in found["console"] if e.get("level") == "SEVERE"]
    assert not severe, f"console errors: {severe}"
    elsewhere = [u for u in found["requests"] if not u.startswith(("file:", "data:"))]
    assert not elsewhere, f"the page asked the network for {elsewhere}"
    in_source = text.count(f'class="{charts.CHART_CLASS}"')
    assert len(found["charts"]) == in_source
    if expect_charts is not None:
        assert in_source == expect_charts, f"{in_source} charts, expected {expect_charts}"
    for chart in found["charts"]:
        assert chart["drawn"] == 1 and chart["embedded"], chart
        assert chart["width"] > 100 and chart["height"] > 50 and chart["marks"] > 10, chart
    assert (out_dir / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return found
