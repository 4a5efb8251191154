"""The config's JSON schema, built from ``params.FIELDS``: each parameter's description, type,
bounds and choices are written once, there.

Snakemake validates the workflow's config against a file (``validate(config, schema=...)`` in
workflow/rules/common.smk), so the schema is also committed, generated, as
``schemas/config.schema.yaml``; tests/config/test_schema.py checks the file is what this module
builds. After changing FIELDS:

    python -m tcplimits.config.schema --write
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from tcplimits.config.params import FIELDS, PORT_MAX, PORT_MIN, Field

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

HEADER = ("# Generated from tcplimits.config.params.FIELDS by tcplimits.config.schema: do not edit.\n"
          "# After changing FIELDS: python -m tcplimits.config.schema --write\n")
DESCRIPTION = (
    "The experiments `snakemake` runs. Every parameter is a flag of `tcplimits run` "
    "(port_range is --port-range). Descriptions, types and bounds come from "
    "tcplimits.config.params.FIELDS. Checks a schema cannot express, such as a reversed port "
    "range, are made by tcplimits.config.grid.points when the workflow is parsed, still "
    "before any job starts.")
GRID = ("Lists of values; their cartesian product gives the points. Any parameter may be "
        "listed. A parameter not listed takes its value from `experiment`.")
POINTS = ("Extra points, each a mapping of parameters (the keys of `grid`, one value each). "
          "A point equal to a grid point is run once.")
REPETITIONS = ("How many times each point runs. Repetition n > 1 gets the id suffix _rep<n>, "
               "so raising it adds runs and keeps the existing ones.")
EXPERIMENT = ("Values every point starts from; a grid list or a point entry overrides them. "
              "Changing one reruns the points it reaches.")
MAX_REPETITIONS = 100
# The word a field of kind "workers", "rate" or "connections" accepts besides an integer.
WORDS = {"workers": "auto", "rate": "max", "connections": "ceiling"}
JSON_TYPES = {"int": "integer", "workers": "integer", "rate": "integer", "connections": "integer",
              "float": "number"}


def field_schema(field: Field) -> dict[str, Any]:
    """One parameter's schema ($defs entry): its description, type, bounds or choices."""
    if field.kind == "port_range":
        low = PORT_MIN if field.minimum is None else int(field.minimum)
        return {"description": f"{field.help}. {low} <= LO <= HI <= {PORT_MAX}.",
                "type": ["string", "null"] if field.optional else "string",
                "pattern": "^[0-9]{1,5}-[0-9]{1,5}$"}
    if field.kind == "choice":
        return {"description": field.help, "type": "string", "enum": list(field.choices)}
    number: dict[str, Any] = {"type": JSON_TYPES[field.kind]}
    if field.optional:
        number["type"] = [number["type"], "null"]
    number.update(minimum=field.minimum, maximum=field.maximum)
    if field.kind in WORDS:
        return {"description": field.help, "oneOf": [{"const": WORDS[field.kind]}, number]}
    return {"description": field.help, **number}


def build_schema() -> dict[str, Any]:
    """The whole config schema: grid, points, repetitions, experiment; every object closed
    (additionalProperties: false), so a misspelt key is refused before any job starts."""
    ref = {name: {"$ref": f"#/$defs/{name}"} for name in FIELDS}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tcplimits sweep configuration",
        "description": DESCRIPTION,
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "grid": {"description": GRID, "type": "object", "additionalProperties": False,
                     "properties": {name: {"type": "array", "minItems": 1, "items": ref[name]}
                                    for name in FIELDS}},
            "points": {"description": POINTS, "type": "array", "default": [],
                       "items": {"type": "object", "additionalProperties": False,
                                 "properties": ref}},
            "repetitions": {"description": REPETITIONS, "type": "integer", "minimum": 1,
                            "maximum": MAX_REPETITIONS, "default": 1},
            "experiment": {"description": EXPERIMENT, "type": "object", "default": {},
                           "additionalProperties": False,
                           "properties": {name: {**ref[name], "default": field.default}
                                          for name, field in FIELDS.items()}},
        },
        "$defs": {name: field_schema(field) for name, field in FIELDS.items()},
    }


class _Dumper(yaml.SafeDumper):
    """Block style for what has a description or nests, one line for the rest (a $ref, a
    bound's type list, an enum); no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_dict(dumper: yaml.SafeDumper, data: dict) -> yaml.Node:
    leaf = "description" not in data and not any(isinstance(v, dict) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=leaf or None)


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = not any(isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat or None)


_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)


def render_schema() -> str:
    """The committed file's text."""
    return HEADER + yaml.dump(build_schema(), Dumper=_Dumper, sort_keys=False, width=96,
                              allow_unicode=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print (or --write) the config schema.")
    parser.add_argument("--write", action="store_true", help=f"write {SCHEMA_PATH}")
    args = parser.parse_args(argv)
    if args.write:
        SCHEMA_PATH.write_text(render_schema())
    else:
        print(render_schema(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
