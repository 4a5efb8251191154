"""`tcplimits` command line: run one experiment, build the image, probe the engine, build the
dataset and the report. Every command has --help (flags grouped, with examples, the exit codes
and the environment variables it reads); a user's mistake (a flag, a config, a file, a missing
extra) is one line on stderr and exit 2, before any container is created.

Exit codes (``EXIT_CODES``): 0 ok, 1 the run failed (run.json says why), 2 bad input (a flag,
a config or a file; --out refused or not writable; a missing extra), 3 unsupported parameters,
4 the Docker engine or the disk failed (unreachable, permission denied on its socket, lost
mid-run; not hidden by --exit-zero, so a workflow retries the point), 130 interrupted.

The command is a package of three parts: ``parser`` (flags and help), ``commands`` (one
function a subcommand) and ``main`` here, which runs one and turns a user's mistake into one
line and exit 2.
"""

from __future__ import annotations

import logging
import sys

from tcplimits.config.params import ParamError
from tcplimits.engine.faults import EXIT_FAILED, EXIT_USAGE
from tcplimits.cli.commands import _write_summary, summary, summary_data
from tcplimits.cli.parser import (EXIT_CODES, EXIT_INTERRUPTED, OTHER_GROUP, RUN_GROUPS,
                                  build_parser)

__all__ = ["EXIT_CODES", "EXIT_INTERRUPTED", "OTHER_GROUP", "RUN_GROUPS", "build_parser", "main",
           "summary", "summary_data", "_write_summary"]


def main(argv: list[str] | None = None) -> int:
    """Run the command ``argv`` asks for; its exit code. A reader of stdout that leaves early
    (`tcplimits ceiling | head -1`) ends the command quietly with exit 1, whichever command
    printed: stdout is flushed here, not at the interpreter's exit, where a broken pipe is a
    message on stderr and exit 120 (argparse's --help and --version exit through SystemExit
    with their text still buffered)."""
    import os

    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:  # the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _main(argv: list[str] | None) -> int:
    from tcplimits.config.grid import ConfigFileError
    from tcplimits.engine.cleanup import Interrupted, signals_raise
    from tcplimits.extras import MissingExtra, missing_extra_message

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.subcommands.get(args.command, parser).unrecognized(extra)
    verbose = getattr(args, "verbose", 0)
    logging.basicConfig(level={0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG),
                        format="%(name)s: %(message)s")
    prog = f"tcplimits {args.command}"
    try:  # SIGTERM or SIGHUP while building the image or probing: its cleanup runs too
        with signals_raise():
            return args.func(args)
    except Interrupted as err:
        print(f"\n{prog}: interrupted ({err})", file=sys.stderr)
        return 130
    except (ParamError, ConfigFileError, MissingExtra) as err:  # ConfigError is a ParamError
        message = str(err)
    except ModuleNotFoundError as err:
        message = missing_extra_message(err.name or "", "this command")
        if message is None:
            raise
    if verbose:
        import traceback

        traceback.print_exc()
    print(f"{prog}: {message}", file=sys.stderr)
    return EXIT_USAGE
