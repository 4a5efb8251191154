"""The report's section "Behind a NAT": its table, chart and the addresses answer, from runs
built the way the engine records them (tcplimits.model.natrun.run_record)."""

from pathlib import Path

import polars as pl

from tcplimits.config.params import RunParams
from tcplimits.model import natrun
from tcplimits.report.sections import nat as nat_section
from tcplimits.results import dataset

SERVER, NAT = ["10.0.0.100"], ["10.0.0.50"]


def nat_run(run_id, connections, clients=2, **values):
    params = RunParams.from_mapping({"nat": "gateway", "clients": clients,
                                     "port_range": "40000-40199",
                                     "nat_port_range": "40000-40099", **values})
    rows = [dict(client=c, proc=1, connections=n, error="ETIMEDOUT")
            for c, n in enumerate(connections, 1)]
    counters = {"before": {"count": 0, "stat": {"insert_failed": 0, "drop": 0}},
                "held": {"count": sum(connections), "stat": {"insert_failed": 6, "drop": 6}}}
    nat = natrun.run_record(params, [0] * clients, "EADDRNOTAVAIL",
                               [f"10.0.0.{i + 2}" for i in range(clients)], SERVER, NAT,
                               [5000], rows, counters)
    nat.update(counters=counters, router={"time_wait_timeout_s": 120},
               peers=[{"addr": NAT[0], "connections": sum(connections), "port_lo": 40000,
                       "port_hi": 40099, "server_ports": [5000]}])
    record = {"run_id": run_id, "status": "ok", "params": params.to_dict(),
              "totals": {"connections": sum(connections)}, "nat": nat}
    return dataset.run_row(record, Path(run_id)), [{"run_id": run_id, **r} for r in rows]


class D:
    def __init__(self, runs, clients, churn_runs=None):
        self.runs, self.clients = runs, clients
        self.churn_runs = churn_runs if churn_runs is not None else pl.DataFrame()


def data(*runs):
    rows = [r for r, _ in runs]
    clients = [c for _, cs in runs for c in cs]
    return D(pl.DataFrame(rows, schema=dataset.RUNS_SCHEMA), pl.DataFrame(clients))


def test_the_table_shows_the_shared_pool_and_the_errno():
    d = data(nat_run("nat-shared", [60, 40]))
    table = nat_section.nat_table(d.runs, d.clients)
    (row,) = table.iter_rows(named=True)
    assert row["measured"] == 100 and row["model"] == "100" and row["without NAT"] == 400
    assert row["stopped with"] == "ETIMEDOUT" and row["insert_failed / drop"] == "6 / 6"
    assert row["server saw"] == "10.0.0.50: 100 from ports 40000-40099"
    assert row["agrees"] == "yes"


def test_the_section_reads_every_number_from_the_data():
    d = data(nat_run("nat-shared", [60, 40]), nat_run("nat-short", [50, 40]))
    text = nat_section.behind_a_nat(d).text()
    assert "**1 of 2** point(s) behind the NAT" in text
    assert "= 120 s" in text
    assert "How many NAT addresses" in text and "⌈M / 64,512⌉" in text
    assert "For 2 clients asking 400 connections: **1** NAT address" in text


def test_no_nat_point_says_how_to_get_one():
    d = D(pl.DataFrame(schema=dataset.RUNS_SCHEMA), pl.DataFrame())
    text = nat_section.behind_a_nat(d).text()
    assert "config/nat.yaml" in text and "84,696" in text


def test_the_chart_has_a_point_per_run():
    d = data(nat_run("nat-shared", [60, 40]))
    spec = nat_section.pool_chart(d.runs).to_dict()
    assert spec["layer"][0]["mark"]["type"] == "bar"


def churn_run(run_id, closer, connections, **values):
    """A churn point through the NAT as the engine records it: the direct churn verdict, the
    NAT's churn model and verdict (natrun.run_record), which then becomes the churn verdict."""
    params = RunParams.from_mapping({"nat": "gateway", "mode": "churn", "rate": 200,
                                     "duration": 8, "closer": closer,
                                     "port_range": "40000-41999",
                                     "nat_port_range": "40000-40099", **values})
    rows = [dict(client=1, proc=1, connections=connections, error="DURATION")]
    counters = {"before": {"stat": {"insert_failed": 0, "drop": 0}},
                "held": {"count": 100, "stat": {"insert_failed": 0, "drop": 0}}}
    direct = {"connections": connections, "rate": connections / 8, "agrees": True,
              "sentence": "direct", "errnos": {"DURATION": 1}}
    nat = natrun.run_record(params, [0], "EADDRNOTAVAIL", ["10.0.0.2"], SERVER, NAT, [5000],
                            rows, counters)
    record = {"run_id": run_id, "status": "ok", "params": params.to_dict(),
              "totals": {"connections": connections}, "nat": nat,
              "churn": {"prediction": None, "verdict": {**direct, **{
                  k: nat["verdict"][k] for k in ("agrees", "sentence")}}}}
    return dataset.run_row(record, Path(run_id))


def test_churn_through_the_nat_shows_the_model_beside_the_measured_rate():
    churn_runs = pl.DataFrame([churn_run("nat-churn<s>", "server", 184),
                               churn_run("nat-churn-c", "client", 1600, tw_reuse=1)],
                              schema=dataset.RUNS_SCHEMA)
    table = nat_section.churn_table(churn_runs)
    rows = {r["closer"]: r for r in table.iter_rows(named=True)}
    assert rows["server"]["measured"] == "23/s" and rows["server"]["bound"] == "nat_paws"
    assert rows["server"]["model, pool turned over"].startswith("12/s (")  # (6.5/s – 32/s)
    assert rows["server"]["model, whole run"] == "24/s (19/s – 43/s)"  # 193 (149 – 342) / 8
    assert rows["server"]["agrees"] == "yes" and rows["server"]["asked"] == "200/s"
    assert rows["client"]["model, whole run"] == rows["client"]["measured"] == "200/s"
    assert rows["client"]["agrees"] == "yes"
    text = nat_section.behind_a_nat(
        D(pl.DataFrame(schema=dataset.RUNS_SCHEMA), pl.DataFrame(), churn_runs)).text()
    assert "**2 of 2** churn point(s)" in text
    assert "nat-churn&lt;s&gt;: as predicted: 184 opened and closed" in text
    assert "65,536" not in text and "64,512 / 60 = 1,075/s" in text
    assert "through 100 ports (nat-churn&lt;s&gt;), the model gives 12/s" in text
    # the addresses a churn needs: the fastest point asked 200/s, one address serves 1,075/s
    assert "200/s to one destination needs **1** NAT address" in text


def test_a_churn_point_outside_the_span_differs():
    churn_runs = pl.DataFrame([churn_run("nat-churn-s", "server", 1600)],
                              schema=dataset.RUNS_SCHEMA)
    (row,) = nat_section.churn_table(churn_runs).iter_rows(named=True)
    assert row["agrees"] == "no" and row["measured"] == "200/s"
