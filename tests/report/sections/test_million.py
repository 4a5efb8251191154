"""The report's section "One host, one million", from run records as the engine writes them."""

from pathlib import Path

import polars as pl

from tcplimits.results import dataset
from tcplimits.report.data import Data
from tcplimits.model import hostlimits
from tcplimits.report.sections import million as million_findings
from tcplimits import model
from tcplimits.config.params import RunParams

HOST = {"fs.file-max": 2_466_177, "fs.file-nr": 60_000, "net.netfilter.nf_conntrack_max": 262_144,
        "net.netfilter.nf_conntrack_count": 30_000, "net.bridge.bridge-nf-call-iptables": 1,
        "net.ipv4.tcp_max_orphans": 131_072, "net.ipv4.tcp_mem": [1, 2, 575_802],
        "MemAvailable": 22 * 2**30}


def record(run_id, held, connect_s, kernel, conntrack, **values):
    params = RunParams(port_range="1024-65535", nofile=20000, **values)
    workers = model.auto_server_workers(params, 20000)
    pred = model.predict(params, server_nofile=20000, server_workers=workers,
                         conntrack_max=262_144, host_facts=HOST)
    demand = model.predict(params, server_nofile=20000, server_workers=workers).total
    limits = hostlimits.host_limits(params, HOST, demand, workers)
    return {
        "run_id": run_id, "status": "ok", "params": params.to_dict(),
        "resolved": {"server_nofile": 20000, "server_workers": workers},
        "prediction": pred.to_dict(), "totals": {"connections": held, "server_accepted": held},
        "connect_s": connect_s, "teardown_s": 12.0,
        "host_limits": [lim.to_dict() for lim in limits],
        "footprint": {"kernel_bytes_per_connection": kernel, "user_bytes_per_connection": 60,
                      "host_slab_bytes_per_connection": 8800,
                      "server_namespace_conntrack": conntrack},
    }


def runs_frame(records):
    rows = [dataset.run_row(r, Path("/runs") / r["run_id"]) for r in records]
    return dataset.conform(pl.DataFrame(rows, infer_schema_length=None), dataset.RUNS_SCHEMA)


RUNS = runs_frame([
    record("small", 3000, 1.0, 5000, 0, network="loopback", clients=1, procs=1,
           max_connections=3000),
    record("bridge-250k", 232_144, 60.0, 5100, 232_144, clients=10, procs=2,
           max_connections=12500),
    record("loop-1m", 1_000_000, 200.0, 5200, 0, network="loopback", clients=8, procs=10,
           max_connections=12500),
    record("seed-like", 1000, 1.0, 5000, 1000, clients=1, procs=1, max_connections=1000),
])


def data(runs):
    empty = pl.DataFrame()
    return Data(runs, empty, empty, empty)


def test_the_ladder_is_the_big_or_loopback_runs_smallest_first():
    assert million_findings.ladder_runs(RUNS)["run_id"].to_list() == ["small", "bridge-250k", "loop-1m"]
    table = million_findings.ladder_table(RUNS)
    top = table.row(-1, named=True)
    assert top["held"] == 1_000_000 and top["per s"] == 5000 and top["conntrack entries"] == 0
    bridge = table.row(1, named=True)
    assert bridge["limit"] == "net.netfilter.nf_conntrack_max (host)"
    assert bridge["predicted"] == 232_144


def test_headline_names_the_most_held_and_the_wall_on_the_bridge():
    text = million_findings.million_headline(RUNS)
    assert "**1,000,000**" in text and "loopback" in text and "connected in 200 s" in text
    assert "On bridge, net.netfilter.nf_conntrack_max stopped the run at 232,144" in text


def test_memory_sentence_takes_medians_over_the_ladder():
    text = million_findings.memory_sentence(RUNS)
    assert "median 5,100 bytes" in text and "60 bytes" in text and "3 runs" in text
    assert "8,800 bytes" in text


def test_limits_of_the_biggest_run_and_the_sentences_of_those_that_stop_a_point():
    top = million_findings.biggest(RUNS)
    assert top["run_id"] == "loop-1m"
    limits = million_findings.limits_table(top)
    assert "net.netfilter.nf_conntrack_max" not in limits["setting"].to_list()
    fmax = limits.filter(pl.col("setting") == "fs.file-max").row(0, named=True)
    assert fmax["this run needs"] == 60_000 + 2 * 1_000_000
    assert fmax["room (connections)"] == (2_466_177 - 60_000) // 2
    blocks = million_findings.one_million(data(RUNS))
    assert blocks.kinds()[:3] == ["markdown", "html", "chart"]
    said = blocks.text()
    assert "sysctl -w net.netfilter.nf_conntrack_max=" in said and "--network loopback" in said


def test_a_rung_that_dropped_syns_is_marked_suspect_and_said_why():
    reason = model.dropped_syns_reason(1070, model.PORTS)
    noisy = record("loop-1m", 1_000_000, 44.5, 5200, 0, network="loopback", clients=8,
                   procs=10, max_connections=12500)
    noisy.update(noisy=True, noisy_reason=reason)
    runs = runs_frame([noisy, record("small", 3000, 1.0, 5000, 0, network="loopback",
                                     clients=1, procs=1, max_connections=3000)])
    assert million_findings.ladder_table(runs)["times"].to_list() == ["ok", "suspect"]
    said = million_findings.one_million(data(runs)).text()
    assert "1 point ran noisy" in said and "1,070 SYNs" in said and "the counts stand" in said


def test_a_dataset_without_big_runs_says_how_to_get_them():
    small = RUNS.filter(pl.col("run_id") == "seed-like")
    blocks = million_findings.one_million(data(small))
    assert blocks.kinds() == ["markdown"] and "config/million.yaml" in blocks.text()


def test_the_model_explains_a_host_stop_with_setting_value_need_and_command():
    bridge = RUNS.filter(pl.col("run_id") == "bridge-250k").row(0, named=True)
    comparison = model.compare_run(bridge, [])
    assert comparison.limit == model.CONNTRACK and comparison.expected == 232_144
    said = " ".join(comparison.explanations)
    assert "net.netfilter.nf_conntrack_max is 262,144" in said and "sysctl -w" in said
    loop = RUNS.filter(pl.col("run_id") == "loop-1m").row(0, named=True)
    assert not any("sysctl" in e for e in model.compare_run(loop, []).explanations)
