"""The workflow config -> points: expansion, ids, and refusal of bad configs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from tcplimits.config import grid
from tcplimits.config.params import CHURN_ONLY, FIELDS, NAT_ONLY, SERVER_ONLY, RunParams

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = grid.load_schema()

BASE = {
    "grid": {"port_range": ["32768-60999", "1024-65535"], "nofile": [1000, 15000],
             "clients": [1, 2], "procs": [1]},
    "points": [],
    "repetitions": 1,
    "experiment": {"server_workers": "auto", "connect_timeout": 3, "timeout": 600},
}


def config(**changes) -> dict:
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


def test_grid_is_the_cartesian_product():
    points = grid.points(BASE)
    assert len(points) == 2 * 2 * 2 * 1
    combos = {(p.params.port_range, p.params.nofile, p.params.clients) for p in points}
    assert len(combos) == 8
    assert all(p.repetition == 1 for p in points)
    # experiment values reach every point; keys set nowhere keep RunParams' defaults
    assert all(p.params.timeout == 600.0 and p.params.backlog == 4096 for p in points)


def test_points_repetitions_and_duplicates():
    cfg = config(
        points=[
            {"port_range": "1024-65535", "nofile": 1000, "clients": 1, "procs": 1},  # in grid
            {"port_range": "40000-40999", "server_nofile": 200, "server_workers": 1,
             "backlog": 8},
            {"port_range": "40000-40999", "server_nofile": 200, "server_workers": 1,
             "backlog": 8},  # listed twice
        ],
        repetitions=3,
    )
    points = grid.points(cfg)
    assert len(points) == (8 + 1) * 3
    assert len({p.id for p in points}) == len(points)
    server = [p for p in points if p.params.server_nofile == 200]
    assert [p.repetition for p in server] == [1, 2, 3]
    assert [p.id for p in server] == [
        "ports40000-40999_nofile15000_clients1_procs1_server-nofile200_server-workers1_backlog8",
        "ports40000-40999_nofile15000_clients1_procs1_server-nofile200_server-workers1_backlog8"
        "_rep2",
        "ports40000-40999_nofile15000_clients1_procs1_server-nofile200_server-workers1_backlog8"
        "_rep3",
    ]


def test_ids_are_readable_stable_and_safe():
    point = grid.points(config(grid={"port_range": ["32768-60999"], "nofile": [15000],
                                     "clients": [2], "procs": [1]}))[0]
    assert point.id == "ports32768-60999_nofile15000_clients2_procs1"
    # the same parameters, in another order or left to their defaults, give the same id
    again = grid.points(config(grid={}, points=[{"clients": 2, "port_range": "32768-60999"}]))[0]
    assert again.id == point.id and again.params == point.params
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", point.id)
    # a function of the parameters alone
    assert grid.point_id(point.params) == point.id
    assert grid.point_id(point.params, 2) == point.id + "_rep2"


def test_ids_ignore_bounds_on_the_run_but_flags_carry_them():
    a = grid.points(config(experiment={"timeout": 600}))
    b = grid.points(config(experiment={"timeout": 900, "connect_timeout": 5}))
    assert [p.id for p in a] == [p.id for p in b]
    assert all("--timeout 900.0" in p.flags and "--connect-timeout 5.0" in p.flags for p in b)
    assert [p.flags for p in a] != [p.flags for p in b]


def test_a_job_asks_for_the_run_timeout_plus_a_margin():
    minutes = {timeout: grid.points(config(experiment={"timeout": timeout}))[0].job_minutes
               for timeout in (60, 61, 600, 3600)}
    margin = grid.JOB_MARGIN_MINUTES
    assert minutes == {60: 1 + margin, 61: 2 + margin, 600: 10 + margin, 3600: 60 + margin}


def test_ids_name_every_non_default_physical_parameter():
    for name, field in FIELDS.items():
        if name in grid.NON_PHYSICAL or name in grid.ID_KEYS:
            continue
        if field.kind == "choice":
            value = next(c for c in field.choices if c != field.default)
        elif field.kind == "port_range":
            value = "40000-40099"
        else:
            value = 3 if field.kind in ("int", "workers", "rate", "connections") else 7.5
            value = max(value, field.minimum or 0)
            value = min(value, field.maximum if field.maximum is not None else value)
            value = 1 if value == field.default else value
        values = {name: value}
        if name in CHURN_ONLY:
            values["mode"] = "churn"
        if name in NAT_ONLY:
            values["nat"] = "gateway"
        if name in SERVER_ONLY:
            values["server"] = SERVER_ONLY[name][0]
        params = RunParams.from_mapping(values)
        shown = value if isinstance(value, str) else f"{value:g}"
        assert f"_{name.replace('_', '-')}{shown}" in grid.point_id(params), name
    assert grid.point_id(RunParams()) == "ports32768-60999_nofile15000_clients1_procs1"


def test_flags_round_trip_through_the_cli_parser():
    from tcplimits.cli import build_parser

    for point in grid.points(config(points=[{"server_nofile": 200, "max_connections": 10}])):
        args = build_parser().parse_args(["run", *point.params.to_args(), "--out", "x"])
        values = {n: getattr(args, n) for n in FIELDS if getattr(args, n) is not None}
        assert RunParams.from_mapping(values) == point.params


def test_points_sharing_an_id_must_agree():
    cfg = config(points=[{"port_range": "40000-40999", "timeout": 30},
                         {"port_range": "40000-40999", "timeout": 60}])
    with pytest.raises(grid.ConfigError, match="timeout"):
        grid.points(cfg)


# Each bad config, the key its error must name, and the value (as the error prints it).
BAD = [
    ("reversed range", {"grid": {"port_range": ["60999-32768"]}}, "grid.port_range[0]",
     "60999-32768"),
    ("malformed range", {"grid": {"port_range": ["abc"]}}, "grid.port_range[0]", "abc"),
    ("range low end below 1024", {"points": [{"port_range": "1023-65535"}]},
     "points[0].port_range", "1023-65535"),
    ("range high end above 65535", {"grid": {"port_range": ["1024-65536"]}},
     "grid.port_range[0]", "1024-65536"),
    ("nofile 0", {"grid": {"nofile": [1000, 0]}}, "grid.nofile[1]", "0"),
    ("clients 0", {"points": [{"clients": 0}]}, "points[0].clients", "0"),
    ("procs -1", {"grid": {"procs": [-1]}}, "grid.procs[0]", "-1"),
    ("wrong type", {"grid": {"clients": ["many"]}}, "grid.clients[0]", "many"),
    ("float nofile", {"experiment": {"nofile": 1.5}}, "experiment.nofile", "1.5"),
    ("workers word", {"grid": {"server_workers": ["many"]}}, "grid.server_workers[0]", "many"),
    ("workers 0", {"points": [{"server_workers": 0}]}, "points[0].server_workers", "0"),
    ("server nofile too low", {"experiment": {"server_nofile": 8}},
     "experiment.server_nofile", "8"),
    ("scalar instead of list", {"grid": {"nofile": 1000}}, "grid.nofile", "1000"),
    ("empty list", {"grid": {"nofile": []}}, "grid.nofile", "[]"),
    ("unknown grid key", {"grid": {"nofiles": [10]}}, "grid.nofiles", "[10]"),
    ("unknown point key", {"points": [{"port_range": "40000-40999", "colour": "red"}]},
     "points[0].colour", "red"),
    ("unknown experiment key", {"experiment": {"timeout_s": 5}}, "experiment.timeout_s", "5"),
    ("unknown top-level key", {"repetition": 2}, "repetition", "2"),
    ("repetitions 0", {"repetitions": 0}, "repetitions", "0"),
    ("repetitions word", {"repetitions": "twice"}, "repetitions", "twice"),
    ("point not a mapping", {"points": ["40000-40999"]}, "points[0]", "40000-40999"),
    ("timeout too short", {"experiment": {"timeout": 1}}, "experiment.timeout", "1"),
    ("network word", {"grid": {"network": ["host"]}}, "grid.network[0]", "host"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_configs_name_key_and_value(case):
    _, changes, key, value = case
    cfg = config()
    for top, change in changes.items():
        if isinstance(change, dict) and isinstance(cfg.get(top), dict):
            cfg[top] = {**cfg[top], **change}
        else:
            cfg[top] = change
    with pytest.raises(grid.ConfigError) as err:
        grid.points(cfg)
    assert err.value.key == key
    assert key in str(err.value) and value in str(err.value)


def test_no_points_is_an_error():
    with pytest.raises(grid.ConfigError, match="no points"):
        grid.points({"grid": {}, "points": []})


def test_schema_mirrors_params_fields():
    """The schema's keys, types, bounds and defaults are those of params.FIELDS."""
    props = SCHEMA["properties"]
    assert set(SCHEMA["$defs"]) == set(FIELDS)
    assert set(props["grid"]["properties"]) == set(FIELDS)
    assert set(props["points"]["items"]["properties"]) == set(FIELDS)
    assert set(props["experiment"]["properties"]) == set(FIELDS)
    for name, field in FIELDS.items():
        spec = SCHEMA["$defs"][name]
        assert spec.get("description"), name
        assert props["experiment"]["properties"][name]["default"] == field.default, name
        if field.kind == "choice":
            assert spec["type"] == "string" and tuple(spec["enum"]) == field.choices, name
            continue
        if field.kind in ("workers", "rate", "connections"):
            numeric = next(s for s in spec["oneOf"] if "type" in s)
            assert {"const": {"workers": "auto", "rate": "max",
                              "connections": "ceiling"}[field.kind]} in spec["oneOf"]
        else:
            numeric = spec
        types = numeric["type"] if isinstance(numeric["type"], list) else [numeric["type"]]
        expected = {"int": "integer", "workers": "integer", "rate": "integer", "float": "number",
                    "port_range": "string", "connections": "integer"}[field.kind]
        assert set(types) == {expected} | ({"null"} if field.optional else set()), name
        if field.kind != "port_range":
            assert numeric.get("minimum") == field.minimum, name
            assert numeric.get("maximum") == field.maximum, name
    for key in ("grid", "points", "repetitions", "experiment"):
        assert props[key].get("description"), key


def test_schema_refuses_unknown_keys_everywhere():
    def walk(node, where="schema"):
        if isinstance(node, dict):
            if node.get("type") == "object":
                assert node.get("additionalProperties") is False, where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")

    walk(SCHEMA)


@pytest.mark.parametrize("name", ["config.yaml", "seed.yaml", "tiny.yaml", "fourtuple.yaml",
                                  "churn.yaml", "million.yaml", "nat.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = grid.load_config(ROOT / "config" / name)
    points = grid.points(cfg)
    assert points
    # every top-level key is written out, so the file documents itself
    assert set(cfg) == {"grid", "points", "repetitions", "experiment"}


def test_default_config_shows_every_phenomenon_at_small_scale():
    points = grid.points(grid.load_config(ROOT / "config" / "config.yaml"))
    assert 8 <= len(points) <= 21
    params = [p.params for p in points]
    # The 4-tuple: a member that lifts the cap, and a bind mode that loses it (issue 9).
    assert {p.bind_mode for p in params} >= {"connect", "bind", "bind-no-port"}
    assert any(p.server_addrs > 1 for p in params) and any(p.server_ports > 1 for p in params)
    assert {p.clients for p in params} >= {1, 2, 3}
    assert any(p.procs > 1 and p.nofile * p.procs > p.port_count for p in params)  # shared pool
    assert any(p.nofile - 3 < p.port_count for p in params)  # descriptor-bound
    assert any(p.server_nofile is not None and p.server_workers == 1 for p in params)
    assert any(p.port_range == "32768-60999" for p in params)  # the seed's 28,232
    assert sum(p.port_count * p.clients for p in params) < 100_000
    # Churn (issue 11): who closes first and tcp_tw_reuse, each for a few seconds.
    churn = [p for p in params if p.churn]
    assert {p.closer for p in churn} == {"client", "server"}
    assert {p.tw_reuse for p in churn if p.closer == "client"} >= {0, 1}
    assert all(p.duration <= 10 for p in churn)


def test_seed_config_is_port_bound():
    points = grid.points(grid.load_config(ROOT / "config" / "seed.yaml"))
    assert {p.params.port_range for p in points} == {"32768-60999", "1024-65535"}
    for p in points:
        assert p.params.clients == 2
        assert p.params.procs * (p.params.nofile - 3) > p.params.port_count


def test_load_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert grid.load_config(path) == {}
    path.write_text(yaml.safe_dump(BASE))
    assert grid.load_config(path) == BASE
    path.write_text("- a\n- b\n")
    with pytest.raises(grid.ConfigError):
        grid.load_config(path)


def test_an_id_too_long_is_refused():
    huge = {"port_range": "10240-65535", "nofile": 1048576, "procs": 64, "clients": 32,
            "server_nofile": 1048576, "server_workers": 256, "backlog": 65535,
            "max_connections": 1048576}
    with pytest.raises(grid.ConfigError, match="longer than 128"):
        grid.points({"points": [huge], "repetitions": 100})


def test_points_command_lists_ids_and_flags(capsys):
    from tcplimits.cli import main

    assert main(["points", str(ROOT / "config" / "tiny.yaml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [
        p.id for p in grid.points(grid.load_config(ROOT / "config" / "tiny.yaml"))]
    assert all("--port-range" in line for line in lines)


def test_churn_config_sweeps_closer_reuse_and_rate_on_a_small_range():
    pts = grid.points(grid.load_config(Path(__file__).resolve().parents[2] / "config" / "churn.yaml"))
    assert all(p.params.churn and p.params.port_count == 1000 for p in pts)
    combos = {(p.params.closer, p.params.tw_reuse, p.params.rate) for p in pts}
    assert {(c, r, x) for c in ("client", "server") for r in (0, 1) for x in (200, "max")} <= combos
    assert len({p.id for p in pts}) == len(pts)


def test_churn_keys_without_mode_churn_are_refused_naming_the_combination():
    with pytest.raises(grid.ConfigError, match=r"rate=200.*mode churn"):
        grid.points({"grid": {"mode": ["hold", "churn"], "rate": [200]}})
    assert len(grid.points({"grid": {"rate": [200]}, "experiment": {"mode": "churn"}})) == 1


def test_the_schema_ships_in_the_package(tmp_path):
    """An installed tcplimits (a wheel, no checkout) carries the schema the workflow uses."""
    import subprocess
    import sys
    import zipfile

    root = Path(__file__).resolve().parents[2]
    assert grid.SCHEMA_PATH == root / "src" / "tcplimits" / "config" / "schemas" / "config.schema.yaml"
    assert "SCHEMA_PATH" in (root / "workflow" / "rules" / "common.smk").read_text()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(root)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("tcplimits-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("tcplimits/config/schemas/config.schema.yaml").decode()
    assert shipped == grid.SCHEMA_PATH.read_text()


@pytest.mark.parametrize("text", [".nan", ".NaN", ".inf", "-.inf"])
@pytest.mark.parametrize("where", ["experiment: {{timeout: {v}}}\ngrid: {{nofile: [10]}}",
                                   "grid: {{quiet_host_timeout: [1, {v}]}}",
                                   "points: [{{connect_timeout: {v}}}]",
                                   "grid: {{mode: [churn], duration: [{v}]}}"])
def test_yaml_nan_and_infinity_are_refused_by_the_schema_and_points(where, text):
    config = yaml.safe_load(where.format(v=text))
    for check in (grid.validate_config, grid.points):
        with pytest.raises(grid.ConfigError, match="expected a finite number"):
            check(config)


def test_a_grid_too_big_is_refused_before_it_is_expanded(monkeypatch):
    import itertools

    config = {"grid": {k: v for k, v in {
        "nofile": list(range(100, 110)), "procs": list(range(1, 11)),
        "clients": list(range(1, 11)), "backlog": list(range(10, 20)),
        "tw_reuse": [0, 1, 2], "connect_timeout": [1.0, 2.0, 3.0]}.items()}}
    monkeypatch.setattr(itertools, "product", lambda *a: pytest.fail("expanded the grid"))
    with pytest.raises(grid.ConfigError) as err:
        grid.points(config)
    assert str(err.value) == ("config: grid='10 nofile x 10 procs x 10 clients x 10 backlog x "
                              "3 tw_reuse x 3 connect_timeout, 0 points, 1 repetition(s)': "
                              "90,000 runs; at most 10,000: split the sweep into several "
                              "configs")


def test_repetitions_count_against_the_cap():
    config = {"grid": {"nofile": list(range(100, 200))}, "points": [{"nofile": 7}],
              "repetitions": 99}
    assert len(grid.points({**config, "repetitions": 2})) == 202
    assert len(grid.points({**config, "repetitions": 99})) == 9_999  # 101 x 99
    with pytest.raises(grid.ConfigError, match="10,098 runs; at most 10,000"):
        grid.points({**config, "repetitions": 99, "grid": {"nofile": list(range(100, 201))}})
