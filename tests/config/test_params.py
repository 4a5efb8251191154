"""RunParams: validation names the key and the value; nothing odd gets through."""

import pytest

from tcplimits.config.params import FIELDS, ParamError, RunParams, parse_port_range


def test_defaults_are_the_kernel_defaults():
    p = RunParams()
    assert p.port_range == "32768-60999"
    assert p.port_count == 28232
    assert (p.port_lo, p.port_hi) == (32768, 60999)


@pytest.mark.parametrize("text, expected", [
    ("1024-65535", (1024, 65535)),
    ("32768 60999", (32768, 60999)),
    (" 40000 - 40999 ", (40000, 40999)),
    ("40000-40000", (40000, 40000)),
])
def test_port_range_forms(text, expected):
    assert parse_port_range(text) == expected


@pytest.mark.parametrize("value, words", [
    ("60999-32768", "reversed"),
    ("1023-65535", "below 1024"),
    ("1024-65536", "above 65535"),
    ("abc", "LO-HI"),
    ("1024-", "LO-HI"),
    (5000, "LO-HI"),
])
def test_bad_port_ranges_name_key_and_value(value, words):
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({"port_range": value})
    assert err.value.key == "port_range"
    assert str(value) in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize("key, value", [
    ("nofile", 0), ("nofile", -5), ("nofile", "many"), ("nofile", 2.5), ("nofile", True),
    ("clients", 0), ("procs", 0), ("procs", "x"), ("backlog", -1),
    ("connect_timeout", "soon"), ("server_workers", "lots"), ("server_workers", 0),
    ("nofile", 2_000_000),
])
def test_bad_values_name_key_and_value(key, value):
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({key: value})
    assert err.value.key == key
    assert err.value.value == value


def test_flag_names_in_errors():
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({"port_range": "9-1"}, flag_names=True)
    assert err.value.key == "--port-range"


def test_unknown_key_is_refused():
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({"nofiles": 10})
    assert err.value.key == "nofiles"
    assert "unknown" in str(err.value)


def test_strings_from_the_command_line_are_coerced():
    p = RunParams.from_mapping({"nofile": "1000", "server_workers": "auto",
                                "connect_timeout": "2.5", "max_connections": "none"})
    assert (p.nofile, p.server_workers, p.connect_timeout, p.max_connections) == \
        (1000, "auto", 2.5, None)
    assert RunParams.from_mapping({"server_workers": "3"}).server_workers == 3


def test_direct_construction_validates_too():
    with pytest.raises(ParamError):
        RunParams(nofile=0)


def test_to_args_round_trips():
    p = RunParams(port_range="40000-40999", nofile=300, clients=2, server_nofile=200)
    args = p.to_args()
    pairs = dict(zip(args[::2], args[1::2]))
    again = RunParams.from_mapping({k[2:].replace("-", "_"): v for k, v in pairs.items()})
    assert again == p


def test_every_field_has_a_flag_and_help():
    for field in FIELDS.values():
        assert field.flag.startswith("--") and field.help


# --- churn fields (issue 11)

def test_churn_fields_coerce():
    p = RunParams.from_mapping({"mode": "Churn", "rate": "250", "duration": "30",
                                "closer": "server", "tw_reuse": "1"})
    assert (p.mode, p.rate, p.duration, p.closer, p.tw_reuse) == ("churn", 250, 30.0, "server", 1)
    assert p.churn and p.rate_per_s == 250
    assert RunParams(mode="churn").rate_per_s is None  # "max"
    assert not RunParams().churn


@pytest.mark.parametrize("values, key", [
    ({"mode": "burst"}, "mode"),
    ({"mode": "churn", "closer": "both"}, "closer"),
    ({"mode": "churn", "rate": "fast"}, "rate"),
    ({"mode": "churn", "rate": 0}, "rate"),
    ({"tw_reuse": 3}, "tw_reuse"),
    ({"rate": 100}, "rate"),                       # churn only
    ({"closer": "server"}, "closer"),              # churn only
    ({"mode": "churn", "duration": 90, "timeout": 60}, "duration"),
])
def test_bad_churn_values_name_key_and_value(values, key):
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping(values)
    assert err.value.key == key
    assert str(values[key]) in str(err.value)


def test_churn_runs_on_loopback_with_one_destination_per_client():
    from tcplimits import model
    p = RunParams.from_mapping({"mode": "churn", "network": "loopback", "clients": 2,
                                "nofile": 15000})
    assert model.destinations(p) == 1
    assert model.destinations(RunParams(network="loopback", nofile=15000)) > 1  # hold spreads


def test_churn_takes_the_4_tuple_members():
    p = RunParams.from_mapping({"mode": "churn", "server_ports": 2, "server_addrs": 2,
                                "client_addrs": 2, "bind_mode": "bind-no-port"})
    assert (p.server_ports, p.server_addrs, p.client_addrs, p.bind_mode) == (
        2, 2, 2, "bind-no-port")


def test_cross_field_errors_name_the_flag():
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({"rate": "5"}, flag_names=True)
    assert err.value.key == "--rate" and "churn" in err.value.reason


def test_client_sysctls_come_from_the_fields():
    p = RunParams.from_mapping({"port_range": "40000-40999", "tw_reuse": 1})
    assert p.client_sysctls() == {"net.ipv4.ip_local_port_range": "40000 40999",
                                  "net.ipv4.tcp_tw_reuse": "1"}
    assert all(f.sysctl.startswith("net.") for f in FIELDS.values() if f.sysctl)


def test_unset_optional_sysctls_keep_the_kernel_value():
    p = RunParams.from_mapping({"tw_reuse": 1, "tw_reuse_delay": 100, "timestamps": 1})
    assert p.client_sysctls()["net.ipv4.tcp_tw_reuse_delay"] == "100"
    assert p.client_sysctls()["net.ipv4.tcp_timestamps"] == "1"
    assert "net.ipv4.tcp_timestamps" not in RunParams().client_sysctls()


def test_runparams_fields_and_defaults_are_those_of_FIELDS():
    import dataclasses

    fields = {f.name: f.default for f in dataclasses.fields(RunParams)}
    assert fields == {name: field.default for name, field in FIELDS.items()}
    assert RunParams().to_dict() == {name: field.default for name, field in FIELDS.items()}


def test_port_count_is_counted_once_both_ends_included():
    from tcplimits.config.params import port_count

    assert port_count("32768-60999") == 28232 == RunParams().port_count
    assert port_count((40000, 40000)) == 1
    with pytest.raises(ParamError):
        port_count("60999-32768")


FLOAT_FIELDS = [name for name, f in FIELDS.items() if f.kind == "float"]


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999",
                                   float("nan"), float("inf")])
def test_nan_and_infinity_are_refused_for_every_float(key, value):
    """NaN passes every bound (each comparison is false): --timeout nan disabled every
    deadline, --quiet-host-timeout nan busy-looped forever."""
    with pytest.raises(ParamError) as err:
        RunParams.from_mapping({key: value, **({"mode": "churn"} if key == "duration" else {})},
                               flag_names=True)
    assert err.value.key == FIELDS[key].flag
    assert "finite" in err.value.reason


@pytest.mark.parametrize("flag", [FIELDS[k].flag for k in FLOAT_FIELDS])
def test_cli_refuses_nan_before_any_container(flag, tmp_path, capsys, monkeypatch):
    import docker

    from tcplimits.cli import main

    monkeypatch.setattr(docker, "from_env", lambda: pytest.fail("reached the engine"))
    churn = ["--mode", "churn"] if flag == "--duration" else []
    assert main(["run", flag, "nan", *churn, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"tcplimits run: {flag} 'nan': expected a finite number (not NaN or "
                   "infinity)")
    assert not (tmp_path / "run").exists()
