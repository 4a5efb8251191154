"""What a reader takes away from the report's ``data/``: each table as CSV beside its Parquet
file, and the data dictionary (``dictionary.csv``: table, column, type, description).

The dictionary has one source, the schemas themselves: each column's description is the
comment on its line in ``results/rundir.py`` (the per-run tables) or ``results/dataset.py``
(runs.parquet, and the parameter columns joined onto every table), a parameter's is its
``config.params.FIELDS`` help. A column without one is a gap the tests report.
"""

from __future__ import annotations

import inspect
import re
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import polars as pl

from tcplimits.config.params import FIELDS
from tcplimits.results import dataset, rundir, write_text

DICTIONARY_FILE = "dictionary.csv"
_ENTRY = re.compile(r'^(?P<indent>\s*)"(?P<name>\w+)":[^#]*?(?:(?P<hash>#)\s*(?P<doc>.*))?$')
_COMMENT = re.compile(r"^(?P<indent>\s*)#\s*(?P<doc>.*)$")
_PREFIXED = re.compile(r'^\s*\*\*\{f"(?P<prefix>\w+)\{k\}"[^#]*(?:#\s*(?P<doc>[^(;]*))?')
_SPREAD = re.compile(r"^\s*\*\*(?P<name>[A-Z_]+),")


def _defining(module: ModuleType, name: str) -> ModuleType:
    """The results module whose source defines ``name = {...}``: ``module`` itself, or one it
    spreads a schema from (results/nat.py's NAT_SCHEMA into the runs table)."""
    candidates = [module, *(sys.modules[key] for key in sorted(sys.modules)
                            if key.startswith("tcplimits.results."))]
    return next(m for m in candidates
                if re.search(rf"^{name}\b[^=]*=\s*\{{", inspect.getsource(m), re.M))


@cache
def schema_docs(module: ModuleType, name: str) -> dict[str, str]:
    """Column -> the comment on its line in ``module``'s ``name = {...}`` (continued on the
    comment lines below it that start in the same column); a spread ``**OTHER_SCHEMA`` brings
    that schema's, ``**{f"prefix{k}": ...}`` its own entries prefixed."""
    lines = inspect.getsource(module).split("\n")
    start = next(i for i, line in enumerate(lines)
                 if re.match(rf"^{name}\b[^=]*=\s*\{{\s*(#.*)?$", line))
    docs: dict[str, str] = {}
    prefix, group, last, column = "", "", None, -1
    for line in lines[start + 1:]:
        if line.startswith("}"):
            break
        if m := _PREFIXED.match(line):
            prefix, group = m["prefix"], (m["doc"] or "").strip()
        elif line.strip().startswith("}.items()"):
            prefix, group = "", ""
        elif m := _SPREAD.match(line):
            docs.update(PARAMS_DOCS() if m["name"] == "PARAMS_SCHEMA"
                        else schema_docs(_defining(module, m["name"]), m["name"]))
        elif m := _ENTRY.match(line):
            last = prefix + m["name"]
            docs[last] = (m["doc"] or "").strip()
            if group and docs[last]:
                docs[last] = f"{group}: {docs[last]}"
            column = m.start("hash") if m["hash"] else -1
        elif (m := _COMMENT.match(line)) and last and len(m["indent"]) == column:
            docs[last] = f"{docs[last]} {m['doc'].strip()}".strip()
        else:
            last, column = None, -1
    return docs


def PARAMS_DOCS() -> dict[str, str]:  # noqa: N802  (read where **PARAMS_SCHEMA is spread)
    return {name: f"parameter: {field.help}" for name, field in FIELDS.items()}


# Where each dataset table's own columns are documented: runs in dataset.py, the per-run
# tables in rundir.py under the run directory file's schema.
_SOURCES = {"runs": (dataset, "RUNS_SCHEMA")} | {
    name: (rundir, next(var for var, schema in vars(rundir).items()
                        if var.endswith("_SCHEMA") and schema is rundir.SCHEMAS[file]))
    for name, (file, _) in dataset.TABLES.items()}


def dictionary() -> pl.DataFrame:
    """Every column of every table of the dataset: table, column, type, description."""
    runs = schema_docs(dataset, "RUNS_SCHEMA")
    rows = []
    for table in dataset.TABLE_NAMES:
        docs = schema_docs(*_SOURCES[table])
        for column, dtype in dataset.SCHEMAS[table].items():
            doc = docs.get(column)
            if doc is None and column in dataset.PARAM_COLUMNS:
                doc = f"(from runs) {runs.get(column, '')}".strip()
            rows.append({"table": table, "column": column, "type": str(dtype),
                         "description": doc or ""})
    return pl.DataFrame(rows, schema={"table": pl.Utf8, "column": pl.Utf8, "type": pl.Utf8,
                                      "description": pl.Utf8})


def csv_frame(df: pl.DataFrame) -> pl.DataFrame:
    """A table CSV can hold: list columns as "a; b; c", everything else as it is."""
    return df.with_columns(
        pl.col(c).cast(pl.List(pl.Utf8)).list.join("; ") for c, t in df.schema.items()
        if isinstance(t, pl.List))


def write_csvs(data_dir: Path) -> list[Path]:
    """Beside each ``<table>.parquet`` in ``data_dir`` its ``<table>.csv``, and the data
    dictionary; the files written (nothing else in ``data_dir`` is touched)."""
    data_dir = Path(data_dir)
    written = []
    for table in dataset.TABLE_NAMES:
        parquet = data_dir / f"{table}.parquet"
        if parquet.exists():
            target = data_dir / f"{table}.csv"
            write_text(csv_frame(pl.read_parquet(parquet)).write_csv(), target)
            written.append(target)
    target = data_dir / DICTIONARY_FILE
    write_text(dictionary().write_csv(), target)
    return [*written, target]
