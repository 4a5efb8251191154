"""The `tcplimits` command's conventions: grouped flags made from params.FIELDS, choices and
readable metavars, each default once, epilogs with examples, exit codes and environment
variables, --json, -v/-q. No Docker engine needed."""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from tcplimits import __version__, cli
from tcplimits.config import grid, params

ROOT = Path(__file__).resolve().parents[2]


def help_of(*command: str) -> str:
    parser = cli.build_parser()
    target = parser.subcommands[command[0]] if command else parser
    return target.format_help()


def flag_help(text: str, flag: str) -> str:
    """The help lines of one flag, up to the next flag or group."""
    m = re.search(rf"^  {re.escape(flag)}\b.*?(?=^  -|^\S|\Z)", text, flags=re.M | re.S)
    assert m, flag
    return " ".join(m.group(0).split())


def test_every_default_is_said_once():
    text = help_of("run")
    for field in params.FIELDS.values():
        assert flag_help(text, field.flag).lower().count("default") <= 1, field.flag
    assert "(default: 15000)" in flag_help(text, "--nofile")
    assert "(default: the engine's cap)" in flag_help(text, "--server-nofile")


def test_choices_and_metavars_are_readable():
    text = help_of("run")
    assert "--mode {hold,churn}" in text
    assert "--bind-mode {connect,bind,bind-no-port}" in text
    assert "--port-range LO-HI" in text and "--server-workers N|auto" in text
    assert "--rate N|max" in text and "--timeout SECONDS" in text
    for field in params.FIELDS.values():  # never the field's name shouted
        assert f"{field.flag} {field.name.upper()}" not in text, field.flag
    assert cli.main(["points", "--configfile", str(ROOT / "config" / "tiny.yaml"),
                     "-q"]) == 0


def test_every_parameter_is_in_one_group_and_a_new_one_lands_in_other(monkeypatch):
    parser = cli.build_parser().subcommands["run"]
    titles = {action.dest: group.title for group in parser._action_groups
              for action in group._group_actions}
    for name in params.FIELDS:
        assert titles[name] in cli.RUN_GROUPS, name
    extra = dataclasses.replace(params.FIELDS["nofile"], name="nat_ports", help="a NAT's ports")
    monkeypatch.setitem(params.FIELDS, "nat_ports", extra)
    text = help_of("run")
    assert f"{cli.OTHER_GROUP}:\n  --nat-ports N" in text


def test_epilogs_give_examples_exit_codes_and_environment():
    top = help_of()
    for word in ("examples:", "exit codes:", "environment:", "DOCKER_HOST",
                 "TCPLIMITS_BASE_IMAGE", "130 interrupted"):
        assert word in top, word
    run = help_of("run")
    assert "tcplimits run --port-range 32768-60999" in run
    assert re.search(r"^  4 +the Docker engine", run, flags=re.M)
    for command in cli.build_parser().subcommands:
        text = help_of(command)
        assert "examples:\n  tcplimits " in text and "exit codes:" in text, command
        assert "-v, --verbose" in text and "-q, --quiet" in text, command
    assert "about twenty" in " ".join(help_of("probe").split())


def test_points_json_and_configfile(capsys):
    path = str(ROOT / "config" / "tiny.yaml")
    assert cli.main(["points", "--configfile", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = grid.points(grid.load_config(path))
    assert [p["id"] for p in out] == [p.id for p in expected]
    assert out[0]["params"] == expected[0].params.to_dict()
    assert out[0]["flags"] == expected[0].params.to_args()


def test_the_version_is_written_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "tcplimits.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_core_dependencies_are_what_run_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {re.split(r"[<>=!~ \[]", d)[0] for d in project["dependencies"]}
    assert core == {"docker", "polars", "pyyaml"}
    extras = project["optional-dependencies"]
    assert {"workflow", "report", "browser", "slurm", "test", "all"} <= set(extras)
    # every module an extra brings is one tcplimits.extras can name
    from tcplimits.extras import EXTRA_OF

    named = {dist for dist, _ in EXTRA_OF.values()}
    for extra in ("workflow", "report", "browser"):
        for requirement in extras[extra]:
            assert re.split(r"[<>=!~ \[]", requirement)[0] in named, requirement


def test_the_report_source_ships_with_the_package():
    from tcplimits.report import render

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    data = project["tool"]["setuptools"]["package-data"]["tcplimits"]
    package = ROOT / "src" / "tcplimits"
    for path in (render.REPORT_SOURCE, render.QUARTO_SETTINGS):
        assert path.exists() and path.is_relative_to(package)
        assert str(path.relative_to(package)) in data


@pytest.mark.parametrize("argv", [["run", "--out", "x", "-q", "-v"], ["probe", "--json", "-q"],
                                  ["image", "-v"], ["clean", "-q"], ["dataset", "d", "--out",
                                                                      "o", "-v"]])
def test_every_command_takes_v_and_q(argv):
    args = cli.build_parser().parse_args(argv)
    assert hasattr(args, "verbose") and hasattr(args, "quiet")
