"""A finished run set against the model, every difference explained (pure, no Docker)."""

from __future__ import annotations

import polars as pl
import pytest

from tests.report.fixtures import synthetic_dataset
from tcplimits import model


def _run(**over):
    row = {"run_id": "r", "status": "ok", "port_range": "40000-40999", "nofile": 15000,
           "procs": 1, "clients": 1, "server_nofile": None, "server_workers": "auto",
           "backlog": 128, "max_connections": None, "resolved_server_nofile": 20000,
           "resolved_server_workers": 1, "predicted_total": 1000, "connections_total": 999,
           "server_accepted": 999, "held_ports": [1], "env_nf_conntrack_max": 262144}
    return {**row, **over}


def _clients(*rows):
    return [{"run_id": "r", "client": c, "proc": p, "connections": n, "error": e}
            for c, p, n, e in rows]


def test_held_port_explains_the_missing_connection():
    c = model.compare_run(_run(), _clients((1, 1, 999, "EADDRNOTAVAIL")))
    assert (c.observed, c.predicted, c.expected, c.deviation) == (999, 1000, 999, -1)
    assert c.within_tolerance
    text = " ".join(c.explanations)
    assert "127.0.0.11" in text and "999 ports, not 1,000" in text
    assert "did not count held ports" in text
    assert "not explained" not in text


def test_held_ports_read_from_client_rows_when_the_run_has_none():
    rows = [{**r, "held_ports": 1} for r in _clients((1, 1, 999, "EADDRNOTAVAIL"))]
    c = model.compare_run(_run(held_ports=None), rows)
    assert c.expected == 999


def test_server_bound_run_explains_queue_and_handshake_race():
    run = _run(port_range="32768-60999", clients=2, server_nofile=1024, server_workers="1",
               resolved_server_nofile=1024, resolved_server_workers=1, predicted_total=1149,
               connections_total=1151, server_accepted=1020, held_ports=[1, 1])
    c = model.compare_run(run, _clients((1, 1, 575, "ETIMEDOUT"), (2, 1, 576, "ETIMEDOUT")))
    assert c.limit == model.SERVER and c.deviation == 2 and c.within_tolerance
    text = " ".join(c.explanations)
    assert "backlog + 1 = 129" in text and "2 handshake(s)" in text
    assert "ETIMEDOUT" not in text  # the expected errno needs no excuse


def test_unexpected_errno_is_named_and_deviation_flagged():
    c = model.compare_run(_run(connections_total=812, server_accepted=812),
                          _clients((1, 1, 812, "ETIMEDOUT")))
    assert not c.within_tolerance
    text = " ".join(c.explanations)
    assert "1 client process stopped with ETIMEDOUT" in text
    assert "-187 connection(s)" in text


def test_short_connect_timeout_is_named():
    c = model.compare_run(_run(connect_timeout=0.1, connections_total=812, server_accepted=812),
                          _clients((1, 1, 812, "ETIMEDOUT")))
    assert any("shorter than the first SYN retransmission" in e for e in c.explanations)


def test_unexplained_shortfall_says_so():
    c = model.compare_run(_run(connections_total=990, server_accepted=990),
                          _clients((1, 1, 990, "EADDRNOTAVAIL")))
    assert any("not explained by the data" in e for e in c.explanations)


def test_process_race_on_a_shared_pool():
    run = _run(nofile=600, procs=2)
    c = model.compare_run(run, _clients((1, 1, 597, "EMFILE"), (1, 2, 402, "EADDRNOTAVAIL")))
    assert c.expected == 999 and c.errnos == {"EMFILE": 1, "EADDRNOTAVAIL": 1}
    assert any("race" in e for e in c.explanations)


def test_unfinished_runs_are_not_compared():
    # Callers pass finished runs; a dataset row of an unfinished run has no count either.
    assert model.compare_run(_run(status="unsupported", connections_total=None)) is None
    assert model.compare_run(_run(status="failed", connections_total=None)) is None


def test_without_resolved_server_the_record_is_trusted():
    c = model.compare_run(_run(resolved_server_nofile=None, resolved_server_workers=None,
                               predicted_limit="ports"))
    assert (c.predicted, c.limit, c.explanations) == (1000, model.PORTS, [])


def test_tolerance_is_absolute_then_relative():
    assert model.tolerance(100) == 2
    assert model.tolerance(28232) == 141


@pytest.mark.parametrize("value,want", [(None, [0, 0]), ([1, 0], [1, 0]),
                                        ([[40719], []], [1, 0]), ([2], [2, 0])])
def test_held_counts(value, want):
    assert model.held_counts(value, 2) == want


def test_params_of_reads_dataset_columns():
    p = model.params_of({"port_range": "1024-65535", "nofile": 300, "server_workers": "3",
                         "server_nofile": None, "max_connections": None, "extra": 1})
    assert (p.port_count, p.nofile, p.server_workers, p.server_nofile) == (64512, 300, 3, None)


def test_compare_runs_on_the_synthetic_dataset(tmp_path):
    d = synthetic_dataset(tmp_path)
    runs = pl.read_parquet(d / "runs.parquet").to_dicts()
    clients = pl.read_parquet(d / "clients.parquet").to_dicts()
    found = {c.run_id: c for c in model.compare_runs(runs, clients)}
    assert set(found) == {r["run_id"] for r in runs if r["status"] == "ok"}
    assert found["nofile-300"].deviation == 0 and found["nofile-300"].explanations == []
    assert not found["short-timeout"].within_tolerance
    assert all(c.observed == c.expected for c in found.values()
               if c.run_id not in ("server-1024", "short-timeout"))


# --- explanations from the run's recorded facts ---------------------------------------------

DNS_SOCKETS = ('{"1": [{"addr": "127.0.0.11", "port": 40719, "state": "LISTEN", '
               '"owner": "docker-dns"}]}')


def test_held_socket_is_named_by_its_recorded_owner_and_port():
    c = model.compare_run(_run(held_sockets=DNS_SOCKETS), _clients((1, 1, 999, "EADDRNOTAVAIL")))
    text = " ".join(c.explanations)
    assert "Docker's embedded DNS resolver" in text and "40719 (LISTEN)" in text
    assert "the pool had 999 ports, not 1,000" in text and "e.g." not in text


def test_unknown_owner_is_named_by_address():
    sockets = '{"1": [{"addr": "10.1.2.3", "port": 40001, "state": "ESTABLISHED", "owner": null}]}'
    c = model.compare_run(_run(held_sockets=sockets), _clients((1, 1, 999, "EADDRNOTAVAIL")))
    assert any("a socket on 10.1.2.3 [40001 (ESTABLISHED)]" in e for e in c.explanations)


def test_recorded_somaxconn_caps_the_accept_queue():
    # backlog 1000 on a kernel whose somaxconn is 128: the queue holds 129, not 1001.
    run = _run(port_range="32768-60999", clients=2, server_nofile=1024, server_workers="1",
               backlog=1000, somaxconn=128, resolved_server_nofile=1024,
               resolved_server_workers=1, predicted_total=1149, connections_total=1149,
               server_accepted=1020, held_ports=[1, 1])
    c = model.compare_run(run, _clients((1, 1, 575, "ETIMEDOUT"), (2, 1, 574, "ETIMEDOUT")))
    assert c.expected == 1020 + 129 and c.deviation == 0
    text = " ".join(c.explanations)
    assert "backlog + 1 = 129 (backlog capped at somaxconn 128)" in text
    without = model.compare_run({**run, "somaxconn": None}, _clients((1, 1, 1149, "ETIMEDOUT")))
    assert without.expected == 1020 + 1001  # the kernel default (4096) does not cap 1000


def test_accept_queue_gap_uses_the_recorded_somaxconn():
    c = model.compare_run(_run(connections_total=999, server_accepted=900, backlog=500,
                               somaxconn=64), _clients((1, 1, 999, "EADDRNOTAVAIL")))
    assert any("+99 against the clients' count: not accounted for" in e
               for e in c.explanations)  # 99 > 64 + 1 places in the queue
    c = model.compare_run(_run(connections_total=999, server_accepted=950, backlog=500,
                               somaxconn=64), _clients((1, 1, 999, "EADDRNOTAVAIL")))
    assert any("up to 65 (min(backlog, somaxconn) + 1) wait in the accept queue" in e
               for e in c.explanations)


def test_server_worker_out_of_descriptors_that_did_not_limit_the_run():
    server = [{"run_id": "r", "worker": 1, "accepted": 600, "error": "EMFILE"},
              {"run_id": "r", "worker": 2, "accepted": 399, "error": None}]
    c = model.compare_run(_run(), _clients((1, 1, 999, "EADDRNOTAVAIL")), server)
    assert any("server worker(s) 1 hit EMFILE in accept()" in e and "did not limit" in e
               for e in c.explanations)
    found = model.compare_runs([_run()], _clients((1, 1, 999, "EADDRNOTAVAIL")), server)
    assert found[0].explanations == c.explanations


def test_emfile_while_port_bound_names_the_process_and_its_room():
    c = model.compare_run(_run(nofile=600, procs=2),
                          _clients((1, 1, 597, "EMFILE"), (1, 2, 402, "EADDRNOTAVAIL")))
    text = " ".join(c.explanations)
    assert "descriptor limit (nofile - 3), 597 sockets" in text
    assert "process(es) 1.1 (client.process) reached their descriptor limit (597)" in text
