"""Optional dependencies: which extra of pyproject.toml brings each module, and the one line
that says how to install it when a command needs one that is missing.

`pip install tcplimits` has what `tcplimits run` needs (docker, polars, pyyaml); the sweep,
the report and its browser check come with extras (``pip install 'tcplimits[all]'``, which
scripts/bootstrap.sh installs)."""

from __future__ import annotations

import importlib
from types import ModuleType

# top-level module -> (its distribution, the extra that installs it)
EXTRA_OF = {
    "snakemake": ("snakemake", "workflow"),
    "jsonschema": ("jsonschema", "workflow"),
    "altair": ("altair", "report"),
    "vl_convert": ("vl-convert-python", "report"),
    "jupytext": ("jupytext", "report"),
    "nbclient": ("nbclient", "report"),
    "nbconvert": ("nbconvert", "report"),
    "nbformat": ("nbformat", "report"),
    "traitlets": ("nbconvert", "report"),
    "ipykernel": ("ipykernel", "report"),
    "selenium": ("selenium", "browser"),
}


class MissingExtra(ImportError):
    """A module of an extra is not installed; the message says which extra installs it."""


def missing_extra_message(module: str, what: str = "this") -> str | None:
    """One line naming the extra that installs ``module`` (a top-level name), or None when
    the module is no extra's."""
    top = module.split(".")[0]
    if top not in EXTRA_OF:
        return None
    dist, extra = EXTRA_OF[top]
    return (f"{what} needs {dist}, from the '{extra}' extra: pip install 'tcplimits[{extra}]' "
            "(in a checkout: scripts/bootstrap.sh installs every extra into .venv)")


def require(module: str, what: str) -> ModuleType:
    """Import ``module``; MissingExtra with the install line when it is absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        message = missing_extra_message(err.name or module, what)
        if message is None or (err.name or module).split(".")[0] != module.split(".")[0]:
            raise
        raise MissingExtra(message, name=err.name) from None
