"""The `tcplimits` command line: subcommands, flags grouped (the run's from config.params'
FIELDS), help with examples, exit codes and environment."""

from __future__ import annotations

import argparse
import difflib

from tcplimits import __version__
from tcplimits.engine.faults import EXIT_FAILED, EXIT_MACHINE, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from tcplimits.config.params import FIELDS
from tcplimits.cli.commands import (DEFAULT_CONFIG, EXIT_INTERRUPTED, _cmd_ceiling, _cmd_clean, _cmd_dataset, _cmd_image, _cmd_points, _cmd_probe, _cmd_report, _cmd_run)

EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_FAILED: "the run failed (run.json says why); report: the browser check failed",
    EXIT_USAGE: "bad input: a flag, a config or a file; --out refused; a missing extra",
    EXIT_UNSUPPORTED: "run: the engine cannot run these parameters as asked (recorded)",
    EXIT_MACHINE: "the Docker engine (unreachable, socket permission denied, lost) or the "
                  "disk failed",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
ENVIRONMENT = {
    "DOCKER_HOST": "the engine to use (default unix:///var/run/docker.sock); "
                   "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as for docker",
    "TCPLIMITS_BASE_IMAGE": "a local image with python3 to build the agent image from "
                            "(default: python:3.13-slim if it can be had, else a Debian base "
                            "made with debootstrap)",
    "XDG_CACHE_HOME": "where `probe` caches the engine's facts (default ~/.cache; "
                      "files in tcplimits/)",
}

# `tcplimits run --help` groups its parameter flags. A field may name its group itself
# (Field.group, if params grows one); otherwise this table does; a field in neither lands in
# "other parameters", so a new field needs no change here to appear.
RUN_GROUPS: dict[str, tuple[str, ...]] = {
    "what is measured": ("mode", "port_range", "nofile", "procs", "clients", "network",
                         "connections"),
    "server": ("server_nofile", "server_workers", "backlog"),
    "the 4-tuple's other members": ("server_ports", "server_addrs", "client_addrs",
                                    "bind_mode"),
    "behind a NAT (--nat gateway)": ("nat", "nat_addrs", "nat_port_range", "nat_random"),
    "real servers (--server nginx|nginx-proxy|redis)": (
        "server", "worker_connections", "worker_processes", "maxclients", "server_port_range",
        "settle"),
    "churn (--mode churn) and the clients' TIME_WAIT sysctls": (
        "rate", "duration", "closer", "tw_reuse", "tw_reuse_delay", "timestamps"),
    "bounds on the run (not part of a point's id)": (
        "max_connections", "connect_timeout", "timeout", "quiet_host_timeout",
        "quiet_host_sockets"),
}
OTHER_GROUP = "other parameters"
# A flag's metavar by the kind of value it takes.
METAVARS = {"port_range": "LO-HI", "int": "N", "workers": "N|auto", "rate": "N|max",
            "connections": "N|ceiling"}


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped, epilogs (examples, exit codes, environment) kept line by line;
    help columns a little wider."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2, with "did you mean" for a
    mistyped flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # pragma: no cover - argparse path
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unrecognized(self, extra: list[str]) -> None:
        known = [s for action in self._actions for s in action.option_strings]
        hints = []
        for word in extra:
            if word.startswith("-"):
                close = difflib.get_close_matches(word.split("=")[0], known, n=1)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
        self.error(f"unrecognized arguments: {' '.join(extra)}"
                   + (f" ({'; '.join(hints)})" if hints else ""))


def _epilog(examples: list[str], codes: tuple[int, ...] = (), env: tuple[str, ...] = ()) -> str:
    lines = ["examples:", *(f"  {e}" for e in examples)]
    if codes:
        lines += ["", "exit codes:", *(f"  {c:<3} {EXIT_CODES[c]}" for c in codes)]
    if env:
        lines += ["", "environment:", *(f"  {name}: {ENVIRONMENT[name]}" for name in env)]
    return "\n".join(lines)


def _default_text(field) -> str:
    """" (default: X)", unless the help says its default itself (each default once)."""
    if "default" in field.help.lower():
        return ""
    return f" (default: {'none' if field.default is None else field.default})"


def _metavar(field) -> str | None:
    if field.kind == "choice":
        return None  # argparse shows {a,b}
    if field.kind == "float":
        return "SECONDS" if "seconds" in field.help.lower() else "X"
    return METAVARS.get(field.kind, field.name.upper())


def _run_group_of(name: str) -> str:
    group = getattr(FIELDS[name], "group", None)
    if group:
        return group
    return next((title for title, names in RUN_GROUPS.items() if name in names), OTHER_GROUP)


def _choice_of(choices: tuple[str, ...]):
    """A choice flag's type: any case accepted (as RunParams accepts it); a wrong word is
    named as typed."""
    def choice(value: str) -> str:
        if value.strip().lower() in choices:
            return value.strip().lower()
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from "
                                         f"{', '.join(choices)})")
    return choice


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """One flag per ``params.FIELDS`` entry, in groups. Values stay strings (a choice's word
    lower-cased): RunParams validates them and names the flag on error."""
    titles = list(dict.fromkeys([*RUN_GROUPS, *map(_run_group_of, FIELDS), OTHER_GROUP]))
    groups = {title: p.add_argument_group(title) for title in titles
              if any(_run_group_of(name) == title for name in FIELDS)}
    for title in titles:
        for name in [n for n in FIELDS if _run_group_of(n) == title]:
            field = FIELDS[name]
            extra = ({"choices": field.choices, "type": _choice_of(field.choices)}
                     if field.kind == "choice" and field.choices else {})
            groups[title].add_argument(field.flag, dest=field.name, default=None,
                                       metavar=_metavar(field),
                                       help=field.help + _default_text(field), **extra)


def _add_output_flags(p: argparse.ArgumentParser, *, json_help: str | None = None,
                      verbose_help: str = "more detail: a traceback with an error, "
                      "debug logs with -vv",
                      quiet_help: str = "only results and errors: no progress on stderr",
                      group=None):
    """-v/-q, and --json where the command has a result to print."""
    group = group or p.add_argument_group("output")
    if json_help:
        group.add_argument("--json", action="store_true", help=json_help)
    group.add_argument("-v", "--verbose", action="count", default=0, help=verbose_help)
    group.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    return group




def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcplimits",
        description="How many TCP connections can a server and its clients hold, and what "
        "stops them? Real experiments on the Docker engine.",
        epilog=_epilog(
            ["tcplimits run --port-range 32768-60999 --nofile 15000 --procs 2 --clients 2 "
             "--out results/runs/demo",
             "tcplimits points config/seed.yaml",
             "tcplimits probe",
             "snakemake --cores 4        # the sweep of config/config.yaml and its report",
             "tcplimits COMMAND --help   # each command's flags"],
            codes=tuple(EXIT_CODES), env=tuple(ENVIRONMENT)),
    )
    parser.add_argument("--version", action="version", version=f"tcplimits {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")
    parser.subcommands = sub.choices

    p = sub.add_parser(
        "run", help="run one experiment and write its run directory",
        description="Start one server container and CLIENTS client containers on a fresh "
        "internal bridge network; each client process opens connections until the first "
        "failure (--mode hold) or opens and closes them at a rate (--mode churn). Shows a "
        "live count, prints a table, writes the run directory, removes every container and "
        "the network. Every parameter flag is also a key of a workflow config.",
        epilog=_epilog(
            ["tcplimits run --port-range 32768-60999 --nofile 15000 --procs 2 --clients 2 "
             "--out results/runs/demo",
             "tcplimits run --mode churn --port-range 40000-40999 --rate max --duration 20 "
             "--closer client --out results/runs/churn-demo",
             "tcplimits run --server-ports 2 --bind-mode bind-no-port --out /tmp/t --json"],
            codes=(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSUPPORTED, EXIT_MACHINE,
                   EXIT_INTERRUPTED),
            env=("DOCKER_HOST", "TCPLIMITS_BASE_IMAGE", "XDG_CACHE_HOME")))
    _add_run_flags(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="run directory to write")
    out.add_argument("--run-id", default=None, metavar="ID",
                     help="run id (default: made from time and parameters)")
    out.add_argument("--force", action="store_true",
                     help="replace the run directory --out already holds (refused otherwise, "
                     "so that two runs never mix in one directory)")
    out.add_argument("--exit-zero", action="store_true",
                     help="exit 0 whenever the run directory was written, whatever the run's "
                     "status (for workflows: failures are recorded, not fatal); the engine or "
                     "the disk failing the run still exits 4")
    _add_output_flags(
        p, json_help="print the outcome as JSON (status, counts, the model's prediction and "
        "notes) instead of the table", quiet_help="no live count, no progress on stderr",
        group=out)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "image", help="build the agent image (and its Debian base) if missing; with "
        "--router / --servers / --all, the NAT router's and the real servers' images too",
        description="Build the image the experiments run in. The tag follows a hash of the "
        "container programs: unchanged code is not rebuilt. Without a registry the base is "
        "built once from Debian packages with debootstrap (needs root, ~1 min). A run builds "
        "a missing router or servers image itself, inside its timed setup: build them here "
        "first (the workflow's image job does, for the points that need them). Prints each "
        "tag, the agent image's first.",
        epilog=_epilog(["tcplimits image", "tcplimits image --rebuild --stamp image.txt",
                        "tcplimits image --router      # before runs with --nat gateway",
                        "tcplimits image --all"],
                       codes=(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MACHINE),
                       env=("DOCKER_HOST", "TCPLIMITS_BASE_IMAGE")))
    p.add_argument("--rebuild", action="store_true", help="rebuild the agent image")
    p.add_argument("--router", action="store_true",
                   help="also the NAT router's image (tcplimits-router: the agent image plus "
                   "Debian's iptables), which --nat gateway runs on")
    p.add_argument("--servers", action="store_true",
                   help="also the real servers' image (tcplimits-servers: Debian's nginx, "
                   "Redis, HAProxy), which --server nginx|nginx-proxy|redis runs on")
    p.add_argument("--all", action="store_true", help="every image: --router --servers")
    p.add_argument("--stamp", metavar="FILE",
                   help="also write the tag and image id to this file")
    _add_output_flags(p, quiet_help="no build log on stderr")
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser(
        "probe", help="measure what the engine allows (nofile cap, versions) and read the "
        "host's limits",
        description="Find the highest nofile the engine can give a container, and read "
        "kernel, Docker and conntrack facts; then the host settings a big point depends on "
        "(fs.file-max, fs.nr_open, nf_conntrack_max and count, bridge-nf-call-iptables, "
        "tcp_mem, tcp_max_orphans, MemAvailable, sockstat), read fresh each time. The first "
        "call on an engine starts about twenty short-lived containers (a bisection of the "
        "nofile cap, and the agent image is built first if missing); the engine's facts are "
        "then cached per engine (id, version, kernel) until --refresh.",
        epilog=_epilog(["tcplimits probe", "tcplimits probe --json | jq .engine_nofile_cap",
                        "tcplimits probe --refresh"],
                       codes=(EXIT_OK, EXIT_USAGE, EXIT_MACHINE),
                       env=("DOCKER_HOST", "TCPLIMITS_BASE_IMAGE", "XDG_CACHE_HOME")))
    p.add_argument("--refresh", action="store_true",
                   help="measure again, ignoring the cache (about twenty containers again)")
    _add_output_flags(p, json_help="print the facts as JSON", quiet_help="no progress on "
                      "stderr")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser(
        "ceiling", help="the most connections this host can hold, per network mode, and the "
        "limit that stops it",
        description="For loopback and bridge: the most concurrent connections this host can "
        "hold with both ends on it and its settings as they are (fs.file-max, memory with a "
        "safety margin, conntrack), the limit that binds, the next one and its margin, the "
        "layout that holds it and the command that raises the binding limit. Read fresh each "
        "time; tcplimits never changes a host setting.",
        epilog=_epilog(["tcplimits ceiling", "tcplimits ceiling --json"],
                       codes=(EXIT_OK, EXIT_USAGE, EXIT_MACHINE, EXIT_UNSUPPORTED),
                       env=("DOCKER_HOST",)))
    _add_output_flags(p, json_help="print JSON instead of the table", quiet_help="no progress "
                      "on stderr")
    p.set_defaults(func=_cmd_ceiling)

    p = sub.add_parser(
        "clean", help="remove leftover containers and networks of dead runs",
        description="Remove containers and networks labelled tcplimits=1 whose owning "
        "process is provably dead: same kernel boot and PID namespace, and no process with "
        "its pid and start time. Others are kept and listed; --all --yes removes every one of "
        "yours, --all --everyone --yes every user's.",
        epilog=_epilog(["tcplimits clean", "tcplimits clean --all          # list them all",
                        "tcplimits clean --all --yes    # and remove them"],
                       codes=(EXIT_OK, EXIT_USAGE, EXIT_MACHINE), env=("DOCKER_HOST",)))
    p.add_argument("--all", action="store_true",
                   help="every labelled container and network of yours, also those of live "
                   "runs and those whose owner cannot be checked: lists them, removes them "
                   "with --yes")
    p.add_argument("--everyone", action="store_true",
                   help="with --all: every user's, and those of an older tcplimits that "
                   "recorded no user")
    p.add_argument("--yes", action="store_true", help="confirm --all")
    _add_output_flags(p)
    p.set_defaults(func=_cmd_clean)

    p = sub.add_parser(
        "points", help="list the points of a workflow config",
        description="Check a workflow config as the workflow does and print each grid "
        "point's id and its `tcplimits run` flags. A mistake is one line naming the file, "
        "the key (with the closest known key) or the line and column of a YAML error.",
        epilog=_epilog([f"tcplimits points                 # {DEFAULT_CONFIG}",
                        "tcplimits points config/seed.yaml",
                        "tcplimits points --configfile config/churn.yaml --json"],
                       codes=(EXIT_OK, EXIT_USAGE)))
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG",
                   help=f"the config file (default: {DEFAULT_CONFIG})")
    p.add_argument("--configfile", metavar="CONFIG",
                   help="the same, as Snakemake takes it (snakemake --configfile CONFIG)")
    _add_output_flags(p, json_help="print the points as JSON (id, repetition, parameters, "
                      "flags)")
    p.set_defaults(func=_cmd_points)

    p = sub.add_parser(
        "dataset", help="concatenate run directories into one dataset",
        description="Write runs, clients, server and series Parquet files, parameters as "
        "columns, from run directories.",
        epilog=_epilog(["tcplimits dataset results/runs/* --out results/dataset"],
                       codes=(EXIT_OK, EXIT_USAGE)))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory")
    _add_output_flags(p)
    p.set_defaults(func=_cmd_dataset)

    p = sub.add_parser(
        "report", help="render the HTML report from a dataset",
        description="Render the report (report.qmd, shipped with tcplimits) with Quarto when "
        "installed, else with jupytext + nbclient + nbconvert; one offline HTML file. Prints "
        "the sweep's summary and writes it beside the page (summary.txt). Needs the 'report' "
        "extra; the browser check, the 'browser' extra.",
        epilog=_epilog(["tcplimits report --dataset results/dataset --out results/report",
                        "tcplimits report --dataset results/dataset --out /tmp/r "
                        "--browser-check no"],
                       codes=(EXIT_OK, EXIT_FAILED, EXIT_USAGE)))
    p.add_argument("--dataset", required=True, metavar="DIR", help="dataset directory")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="report directory (index.html, data/, summary.txt)")
    p.add_argument("--source", default=None, metavar="QMD",
                   help="the .qmd to render (default: the report.qmd shipped with tcplimits)")
    p.add_argument("--config-file", metavar="PATH",
                   help="the sweep's config (Snakemake passes its --configfile): copied "
                   "beside the page as config.yaml; the page gives the command that reruns it")
    p.add_argument("--browser-check", choices=["auto", "yes", "no"], default="auto",
                   help="open the page in headless Chromium with networking off, fail on a "
                   "console error or an undrawn chart, save screenshot.png beside it "
                   "(auto, the default: when Chromium, chromedriver and selenium are "
                   "installed)")
    _add_output_flags(p)
    p.set_defaults(func=_cmd_report)
    return parser
