"""The workflow's experiment grid: a config file -> the list of points to run (pure functions).

A config (``config/config.yaml``, schema ``config/schemas/config.schema.yaml`` in this package) holds a
``grid`` of value lists whose cartesian product gives points, extra explicit ``points``,
``repetitions`` and the ``experiment`` values every point starts from. Each point is a
``RunParams`` plus a repetition number, and gets a stable, readable id that names its run
directory (``results/runs/<id>/``) and its ``--run-id``.
"""

from __future__ import annotations

import difflib
import itertools
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tcplimits.config.params import CHURN_ONLY, FIELDS, ParamError, RunParams
# The schema ships in the package (package-data), so an installed tcplimits finds it; the
# workflow's validate() reads this same file.
from tcplimits.config.schema import SCHEMA_PATH

# Always part of an id, in this order and with these short names.
ID_KEYS = {"port_range": "ports", "nofile": "nofile", "clients": "clients", "procs": "procs"}
# Bounds on the run, not on what the kernel allows: left out of ids so that changing them
# reruns the same point in place (through the rule's params) rather than adding a new one.
NON_PHYSICAL = frozenset({"timeout", "connect_timeout", "quiet_host_timeout",
                          "quiet_host_sockets"})
MAX_ID_LENGTH = 128  # what `tcplimits run --run-id` accepts
# Runs one config may ask for (grid combinations and points, times repetitions), counted
# before anything is expanded: a few lists of ten values multiply into millions of points
# (gigabytes in memory), and at seconds to minutes a run, 10,000 runs is already weeks.
MAX_RUNS = 10_000
# Wall time a batch job asks for beyond the run's own timeout: building the image on a node
# that has none (debootstrap, about a minute here), setup and teardown.
JOB_MARGIN_MINUTES = 10


class ConfigError(ParamError):
    """A bad workflow config: names the key (a dotted path such as grid.nofile[1]) and value,
    and the file when it is known (``source``)."""

    source: str | None = None

    def __str__(self) -> str:
        return f"{self.source or 'config'}: {super().__str__()}"


class ConfigFileError(ValueError):
    """A config file that cannot be had: missing, unreadable, not YAML (with line and column).
    The message is one line naming the file."""


def did_you_mean(word: str, known) -> str:
    """' (did you mean backlog?)' for the known word closest to a mistyped one, or ''."""
    close = difflib.get_close_matches(str(word), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


@dataclass(frozen=True)
class Point:
    """One experiment of the sweep."""

    id: str
    params: RunParams
    repetition: int = 1

    @property
    def flags(self) -> str:
        """The `tcplimits run` flags, shell-quoted: every parameter, defaults included, so
        that the rule's params change whenever what the run is asked to do changes."""
        return shlex.join(self.params.to_args())

    @property
    def job_minutes(self) -> int:
        """Wall time to ask a batch scheduler (Slurm) for: the run stops itself at its
        timeout, so the job never needs much more."""
        return math.ceil(self.params.timeout / 60) + JOB_MARGIN_MINUTES


def read_config_file(path: str | Path) -> str:
    """The text of a config file; ConfigFileError naming the file when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        here = sorted(str(p) for p in path.parent.glob("*.yaml")) if path.parent.is_dir() else []
        raise ConfigFileError(f"{path}: no such file"
                              + (f" (here: {', '.join(here[:8])})" if here else "")) from None
    except IsADirectoryError:
        raise ConfigFileError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigFileError(f"{path}: cannot read it (permission denied): "
                              f"chmod a+r {path}, or copy it somewhere you may read") from None
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"{path}: not a text file ({err.reason} at byte "
                              f"{err.start})") from None
    except OSError as err:
        raise ConfigFileError(f"{path}: cannot read it ({err.strerror or err})") from None


def parse_config(text: str, source: str = "config") -> dict:
    """YAML text -> a config mapping; an empty text is an empty config. A syntax error is a
    ConfigFileError with the line and column (1-based) of the problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = err.problem or err.context or "invalid YAML"
        raise ConfigFileError(f"{where}: YAML syntax error: {what}") from None
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{source}: YAML error: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        err = ConfigError("(top level)", data, "expected a mapping of keys grid, points, "
                          "repetitions, experiment")
        err.source = source
        raise err
    return data


def load_config(path: str | Path) -> dict:
    """Read a YAML config; an empty file is an empty config. Every problem is one line naming
    the file: ConfigFileError (missing, unreadable, YAML syntax with line and column) or
    ConfigError (not a mapping)."""
    return parse_config(read_config_file(path), str(path))


def exit_usage(message: str) -> None:
    """One line on stderr and exit code 2: how the workflow stops on a user's mistake, before
    Snakemake plans a job (Snakemake passes SystemExit's code through)."""
    import sys

    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)


def check_config_file(path: str | Path) -> None:
    """The workflow's check of a config file it reads itself (the default one): missing,
    unreadable or YAML errors as one line with the line and column, exit 2."""
    try:
        load_config(path)
    except (ConfigFileError, ConfigError) as err:
        exit_usage(str(err))


def workflow_points(config: dict, sources: list[str]) -> list["Point"]:
    """The workflow's check of its config, before Snakemake's schema check (which would print
    the whole schema): the points, or one line naming the config file(s), the key with the
    closest known key, and the value, and exit 2."""
    try:
        return points(config)
    except ConfigError as err:
        err.source = err.source or " + ".join(map(_as_given, sources)) or "config"
        exit_usage(str(err))
        raise  # exit_usage raised SystemExit; this line is for the type checker


def _as_given(path) -> str:
    """A path as the user most likely typed it: relative to here when below here (Snakemake
    makes --configfile paths absolute)."""
    import os

    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def load_schema(path: str | Path = SCHEMA_PATH) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config schema not found at {path}: reinstall tcplimits "
                                "(pip install -e . in the checkout)")
    return yaml.safe_load(path.read_text())


def _where(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _validator_class():
    """Draft 2020-12 where a "number" is finite: YAML's .nan passes every minimum and
    maximum (each comparison is false), and .inf is no number of seconds."""
    from tcplimits.extras import require

    jsonschema = require("jsonschema", "validating a config")

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "number", lambda checker, value: base.TYPE_CHECKER.is_type(value, "number")
        and not (isinstance(value, float) and not math.isfinite(value)))
    return jsonschema.validators.extend(base, type_checker=checker)


def validate_config(config: dict, schema: dict | None = None) -> None:
    """Raise ConfigError naming the key and value of the first problem: the JSON schema's
    checks (types, finite numbers, bounds, unknown keys), then RunParams' (reversed or
    out-of-range port ranges) on every grid value, point and the experiment defaults."""
    from tcplimits.extras import require

    jsonschema = require("jsonschema", "validating a config")
    schema = load_schema() if schema is None else schema
    validator = _validator_class()(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            unknown = [k for k in error.instance if k not in known]
            key = unknown[0]
            raise ConfigError(_where(where + [key]), error.instance[key],
                              f"unknown key{did_you_mean(key, known)} (known: "
                              f"{', '.join(known)})")
        reason = error.message
        if isinstance(error.instance, float) and not math.isfinite(error.instance):
            reason = "expected a finite number (not NaN or infinity)"
        elif error.validator in ("oneOf", "pattern") and error.schema.get("description"):
            reason += f" (expected: {error.schema['description'].strip()})"
        raise ConfigError(_where(where), error.instance, reason)
    _semantic_checks(config)


def _check(values: dict, where: str) -> RunParams:
    try:
        return RunParams.from_mapping(values)
    except ParamError as err:
        raise ConfigError(f"{where}{err.key}", err.value, err.reason) from None


def _semantic_checks(config: dict) -> None:
    base = config.get("experiment") or {}
    _check(base, "experiment.")
    for key, values in (config.get("grid") or {}).items():
        for i, value in enumerate(values):
            # Each value alone; checks across keys (a churn-only key needs mode churn) are
            # made on each combination by points().
            alone = {k: v for k, v in base.items() if k not in CHURN_ONLY}
            alone.update({key: value, **({"mode": "churn"} if key in CHURN_ONLY else {})})
            try:
                RunParams.from_mapping(alone)
            except ParamError as err:
                raise ConfigError(f"grid.{key}[{i}]", value, err.reason) from None
    for i, point in enumerate(config.get("points") or []):
        _check({**base, **point}, f"points[{i}].")
    if not (config.get("grid") or config.get("points")):
        raise ConfigError("grid", config.get("grid"), "no points: set grid lists or points")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def point_id(params: RunParams, repetition: int = 1) -> str:
    """``ports32768-60999_nofile15000_clients2_procs1``, then every other parameter that
    changes the physics and differs from its default (``_server-nofile200_backlog8``), then
    ``_rep<n>`` for repetitions after the first. A function of the parameters alone."""
    values = params.to_dict()
    parts = [f"{short}{_fmt(values[key])}" for key, short in ID_KEYS.items()]
    for name, field in FIELDS.items():
        if name in ID_KEYS or name in NON_PHYSICAL or values[name] == field.default:
            continue
        parts.append(f"{name.replace('_', '-')}{_fmt(values[name])}")
    if repetition > 1:
        parts.append(f"rep{repetition}")
    return "_".join(parts)


def points(config: dict) -> list[Point]:
    """Validate ``config`` and expand it: the grid's cartesian product, then the explicit
    points, each over ``repetitions``; values not set come from ``experiment`` and then from
    RunParams' defaults. Points with the same id collapse to one (grid and points may
    overlap); two that share an id but differ in a non-physical key are an error."""
    validate_config(config)
    base = dict(config.get("experiment") or {})
    lists = config.get("grid") or {}
    repetitions = config.get("repetitions", 1)
    asked = (math.prod(len(v) for v in lists.values()) if lists else 0) \
        + len(config.get("points") or [])
    if asked * repetitions > MAX_RUNS:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in lists.items())
        raise ConfigError("grid", f"{sizes or 'no lists'}, {len(config.get('points') or [])} "
                          f"points, {repetitions} repetition(s)",
                          f"{asked * repetitions:,} runs; at most {MAX_RUNS:,}: split the "
                          "sweep into several configs")
    combos: list[tuple[str, dict]] = []  # (where it comes from, its values)
    if lists:
        combos += [("grid", dict(zip(lists, values)))
                   for values in itertools.product(*lists.values())]
    combos += [(f"points[{i}]", dict(p)) for i, p in enumerate(config.get("points") or [])]

    by_id: dict[str, tuple[str, Point]] = {}
    for where, values in combos:
        params = _check({**base, **values}, f"{where}." if where != "grid" else
                        "grid (" + ", ".join(f"{k}={v}" for k, v in values.items()) + ") ")
        for rep in range(1, repetitions + 1):
            point = Point(point_id(params, rep), params, rep)
            if len(point.id) > MAX_ID_LENGTH:
                raise ConfigError(where, values, f"its id is longer than {MAX_ID_LENGTH} "
                                  f"characters: {point.id}")
            if point.id not in by_id:
                by_id[point.id] = (where, point)
                continue
            first_where, first = by_id[point.id]
            if first.params != params:
                key = next(k for k, v in params.to_dict().items()
                           if first.params.to_dict()[k] != v)
                raise ConfigError(f"{where}.{key}", getattr(params, key),
                                  f"same point as {first_where} (id {point.id}) but for "
                                  f"{key}, which ids leave out; set it in experiment, or "
                                  "make the points differ in a parameter of the id")
    return [point for _, point in by_id.values()]
