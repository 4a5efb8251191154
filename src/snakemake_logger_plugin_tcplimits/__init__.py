"""The workflow's Snakemake logger plugin (``logger: [tcplimits]`` in workflow/profiles): a
mistake in a ``--configfile`` is said as ``tcplimits points --configfile`` says it, one line
naming the file and the fix, and exit code 2.

Snakemake reads every ``--configfile`` in its own command line, before the Snakefile runs, so
the workflow's check (tcplimits.config.grid.check_config_file) never sees a file that is
missing, unreadable, not YAML or empty; Snakemake logs that as a traceback (a missing file)
or without the file's name (a YAML error), and exits 1. Its logger is the only part of this
workflow that exists by then.

Every other message is left to Snakemake's own handler, untouched: this handler prints
nothing (so Snakemake keeps its default one); it adds a filter to Snakemake's logger, which
sees each record in the thread that logs it, before any handler. Snakemake finds the plugin
by its module name; importing it does nothing else, so other workflows (which do not select
it) are unaffected.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from snakemake_interface_logger_plugins.base import LogHandlerBase

# Where Snakemake reads a config file: its functions there take the file as first argument.
SNAKEMAKE_CONFIGFILE_MODULE = "snakemake.common.configfile"


def config_file_being_read(error: BaseException | None) -> Any:
    """The config file Snakemake was reading when it raised ``error``, or None when the error
    did not come from reading one."""
    path = None
    tb = error.__traceback__ if error is not None else None
    while tb is not None:
        frame = tb.tb_frame
        code = frame.f_code
        if frame.f_globals.get("__name__") == SNAKEMAKE_CONFIGFILE_MODULE and code.co_argcount:
            argument = frame.f_locals.get(code.co_varnames[0])
            if isinstance(argument, (str, os.PathLike)):
                path = argument  # the innermost such frame: the file that failed
        tb = tb.tb_next
    return path


def config_file_mistake(path) -> str | None:
    """What `tcplimits points --configfile` says of a config file (without its prefix), or
    None when the project's checks find nothing wrong with it. The whole check, not only the
    reading: Snakemake also refuses a file that reads as no mapping (an empty one), which the
    project reads as an empty config and then refuses for having no points."""
    from tcplimits.config import grid

    try:
        grid.points(grid.load_config(path))
    except grid.ConfigFileError as err:
        return str(err)
    except grid.ConfigError as err:
        err.source = err.source or str(path)
        return str(err)
    except Exception:  # any other failure of the check: Snakemake's words are better
        return None
    return None


class ConfigFileMistakeFilter(logging.Filter):
    """On Snakemake's error for a config file it could not read, the project's line on stderr
    and exit code 2 instead; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        # Snakemake logs an error from inside the `except` that caught it (print_exception),
        # in the main thread: the exception being handled is the one this record reports.
        error = sys.exception()
        if error is None or getattr(record, "exception", None) != type(error).__name__:
            return True
        path = config_file_being_read(error)
        message = config_file_mistake(path) if path is not None else None
        if message is None:
            return True  # not a mistake the project knows: Snakemake's own words
        from tcplimits.config import grid

        # The workflow's exit on a user's mistake: SystemExit passes through Snakemake's
        # `except Exception`, and its `with SnakemakeApi(...)` still cleans up on the way out.
        grid.exit_usage(message)
        return False  # not reached


class LogHandler(LogHandlerBase):
    """Prints nothing itself; while it is open, Snakemake's logger carries the filter."""

    def __post_init__(self) -> None:
        from snakemake.logging import logger

        self._logger = logger
        self._filter = ConfigFileMistakeFilter()
        self._logger.addFilter(self._filter)

    def emit(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        self._logger.removeFilter(self._filter)
        super().close()

    @property
    def writes_to_stream(self) -> bool:
        # False, so that Snakemake keeps its default handler for every message.
        return False

    @property
    def writes_to_file(self) -> bool:
        return False

    @property
    def has_filter(self) -> bool:
        return True

    @property
    def has_formatter(self) -> bool:
        return True

    @property
    def needs_rulegraph(self) -> bool:
        return False
