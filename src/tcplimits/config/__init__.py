"""Stage 1, config: what a run and a sweep may ask for, checked before anything starts.

    fields   FIELDS, the one list of every parameter (type, default, meaning, bounds)
    params   RunParams: one value of each, parsed and checked
    schema   the config's JSON schema, built from FIELDS (committed as schemas/config.schema.yaml)
    grid     a sweep's YAML -> the points it runs, validated against that schema

Pure: nothing here touches the engine or the disk beyond reading a config file.
"""

from tcplimits.config.params import FIELDS, ParamError, RunParams

__all__ = ["FIELDS", "ParamError", "RunParams"]
