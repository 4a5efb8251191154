"""The report's section "Real servers": numbers from the dataset, server strings escaped."""

import json
from types import SimpleNamespace

import polars as pl

from tcplimits import results
from tcplimits.report.sections import servers
from tcplimits.results import dataset


def _tables(**row):
    base = {"run_id": "r1", "server": "redis", "package_version": "5:7.0.15-1~deb12u7",
            "version": "Redis server v=7.0.15", "workers": 1,
            "effective": json.dumps({"maxclients": "100"}), "held": 100, "opened": 1000,
            "closed_by_peer": 900, "peer_message": "-ERR max number of clients reached\r\n",
            "established": 100, "queued": 0, "limit_log": None, "limit_log_count": None,
            "predicted_low": 100, "predicted_high": 100, "bound": "maxclients",
            "raise_with": "raise maxclients", "agrees": True, "maxclients": 100,
            "resolved_server_nofile": 20000, "settle": 1.0}
    base.update(row)
    real = pl.DataFrame([{k: base.get(k) for k in dataset.REALSERVER_SCHEMA}],
                        schema=dataset.REALSERVER_SCHEMA)
    clients = pl.DataFrame([{"run_id": "r1", "error": "EADDRNOTAVAIL"}],
                           schema={"run_id": pl.Utf8, "error": pl.Utf8})
    return SimpleNamespace(realserver=real, clients=clients)


def test_the_table_shows_held_predicted_and_what_the_clients_saw():
    blocks = servers.real_servers(_tables())
    text = blocks.text()
    assert "1 real-server point (redis): 1 held what" in text
    assert "900 accepted, then closed with &quot;-ERR max number of clients reached&quot;" in text
    assert "stopped with EADDRNOTAVAIL" in text
    assert "Redis holds maxclients = 100" in text  # the model's sentence, recomputed


def test_server_strings_are_escaped():
    text = servers.real_servers(_tables(peer_message="<script>x</script>",
                                              limit_log="<b>log</b>")).text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<b>log</b>" not in text


def test_no_real_server_point_says_how_to_run_them():
    empty = SimpleNamespace(realserver=pl.DataFrame(schema=dataset.REALSERVER_SCHEMA),
                            clients=pl.DataFrame(schema=dataset.CLIENTS_SCHEMA))
    assert servers.COMMAND in servers.real_servers(empty).text()


def test_the_dataset_has_the_table():
    assert "realserver" in dataset.TABLE_NAMES
    assert set(results.REALSERVER_SCHEMA) <= set(dataset.REALSERVER_SCHEMA)
