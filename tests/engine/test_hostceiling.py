"""`tcplimits ceiling`'s table and JSON (issue 22), from synthetic host facts."""

import json

from tcplimits.cli import build_parser
from tcplimits.engine import hostceiling
from tests.model.test_ceiling import CAP, HOST


def test_the_table_names_each_mode_its_binding_and_next_limit_and_the_command():
    found = hostceiling.ceilings(HOST, CAP)
    assert list(found) == ["loopback", "bridge"]
    text = hostceiling.table(found, CAP)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["mode", "most", "connections"]
    loop, bridge = found["loopback"], found["bridge"]
    assert lines[1].startswith("loopback") and f"{loop.connections:,}" in lines[1]
    assert "fs.file-max 2,466,177 (ENFILE)" in lines[1] and f"+{loop.margin:,}" in lines[1]
    assert "nf_conntrack_max 262,144 (ETIMEDOUT)" in lines[2]
    assert f"  loopback: {loop.binding.raise_with}" in lines
    assert f"  bridge: {bridge.binding.raise_with}" in lines
    assert any("--connections ceiling" in line for line in lines)


def test_the_json_holds_the_same_figures():
    data = json.loads(json.dumps(hostceiling.as_json(hostceiling.ceilings(HOST, CAP))))
    assert data["loopback"]["binding"]["name"] == "fs.file-max"
    assert data["loopback"]["margin"] == (data["loopback"]["next"]["connections"]
                                          - data["loopback"]["connections"])
    assert data["bridge"]["layout"]["clients"] >= 1


def test_ceiling_is_a_command_with_help_and_json():
    args = build_parser().parse_args(["ceiling", "--json"])
    assert args.json and args.func.__name__ == "_cmd_ceiling"
