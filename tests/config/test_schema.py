"""The config schema is built from params.FIELDS; the committed file is that build, and the
shipped configs name only FIELDS' parameters."""

from pathlib import Path

import pytest
import yaml

from tcplimits.config import grid, schema
from tcplimits.config.params import FIELDS

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def test_the_committed_schema_is_the_generated_one():
    # After changing FIELDS: python -m tcplimits.config.schema --write
    assert schema.SCHEMA_PATH.read_text() == schema.render_schema()
    assert grid.load_schema() == schema.build_schema()
    assert grid.SCHEMA_PATH == schema.SCHEMA_PATH


def test_each_parameter_is_described_by_its_field():
    for name, field in FIELDS.items():
        assert schema.field_schema(field)["description"].startswith(field.help), name


def test_bounds_words_and_choices_come_from_the_field():
    assert schema.field_schema(FIELDS["nofile"]) == {
        "description": FIELDS["nofile"].help, "type": "integer",
        "minimum": FIELDS["nofile"].minimum, "maximum": FIELDS["nofile"].maximum}
    assert schema.field_schema(FIELDS["server_nofile"])["type"] == ["integer", "null"]
    assert {"const": "auto"} in schema.field_schema(FIELDS["server_workers"])["oneOf"]
    assert schema.field_schema(FIELDS["bind_mode"])["enum"] == list(FIELDS["bind_mode"].choices)
    assert "1024 <= LO <= HI <= 65535" in schema.field_schema(FIELDS["port_range"])["description"]


def test_main_prints_the_schema(capsys):
    assert schema.main([]) == 0
    assert capsys.readouterr().out == schema.render_schema()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_config_key_is_a_parameter(path):
    config = yaml.safe_load(path.read_text()) or {}
    keys = set((config.get("grid") or {})) | set((config.get("experiment") or {}))
    keys |= {k for point in config.get("points") or [] for k in point}
    assert keys <= set(FIELDS), sorted(keys - set(FIELDS))
