"""`tcplimits` command line: run one experiment, build the image, probe the engine, build the
dataset and the report. Every command has --help (flags grouped, with examples, the exit codes
and the environment variables it reads); a user's mistake (a flag, a config, a file, a missing
extra) is one line on stderr and exit 2, before any container is created.

Exit codes (``EXIT_CODES``): 0 ok, 1 the run failed (run.json says why), 2 bad input (a flag,
a config or a file; --out refused or not writable; a missing extra), 3 unsupported parameters,
4 the Docker engine or the disk failed (unreachable, permission denied on its socket, lost
mid-run; not hidden by --exit-zero, so a workflow retries the point), 130 interrupted."""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from pathlib import Path

from tcplimits import __version__
from tcplimits.engine.faults import EXIT_FAILED, EXIT_MACHINE, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from tcplimits.config.params import FIELDS, ParamError, RunParams
from tcplimits.terminal import printable

EXIT_INTERRUPTED = 130
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


def _log(args: argparse.Namespace):
    """Where a command's progress messages go: stderr, or nowhere with -q."""
    if getattr(args, "quiet", False):
        return lambda message: None
    return lambda message: print(message, file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    values = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    try:
        params = RunParams.from_mapping(values, flag_names=True)
    except ParamError as err:
        print(f"tcplimits run: {err.key} {err.value!r}: {err.reason}", file=sys.stderr)
        return EXIT_USAGE
    if args.run_id is not None and not _valid_id(args.run_id):
        print(f"tcplimits run: --run-id {args.run_id!r}: use letters, digits, '.', '_' and '-'",
              file=sys.stderr)
        return EXIT_USAGE
    from tcplimits.engine import faults, outdir
    from tcplimits.engine import run_experiment
    from tcplimits.engine.plan import SAMPLES_PER_PROCESS

    try:  # before any container: a run must not fail at the end for want of a place to write
        outdir.prepare(Path(args.out), force=args.force, need_bytes=outdir.expected_bytes(
            params.clients * params.procs, SAMPLES_PER_PROCESS))
    except outdir.OutDirError as err:
        print(f"tcplimits run: {err}", file=sys.stderr)
        return EXIT_MACHINE if err.fault else EXIT_USAGE
    try:
        record = run_experiment(params, out_dir=Path(args.out), run_id=args.run_id,
                                progress=not args.quiet, log=_log(args))
    except KeyboardInterrupt:
        written = (Path(args.out) / "run.json").exists()
        print("\ntcplimits run: interrupted; nothing of the run is left on the engine"
              + (f"; its partial results (status failed) are in {args.out}" if written else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if record.get("fault") in faults.MACHINE_FAULTS:
        print(printable(f"tcplimits run: {record['reason']}"), file=sys.stderr)
        return EXIT_MACHINE
    if args.json:
        print(json.dumps(summary_data(Path(args.out)), indent=2, default=str), flush=True)
    else:
        print(summary(Path(args.out)), flush=True)
    status = record["status"]
    if args.exit_zero:
        return EXIT_OK
    from tcplimits.results import STATUS_OK, STATUS_UNSUPPORTED

    return {STATUS_OK: EXIT_OK, STATUS_UNSUPPORTED: EXIT_UNSUPPORTED}.get(status, EXIT_FAILED)


def summary(run_dir: Path) -> str:
    """The table printed at the end of a run, from its run directory; the explanations are
    the model's (``model.compare_run``), the same the report shows."""
    from tcplimits import model, results
    from tcplimits.results.dataset import run_row

    record = results.read_run(run_dir)
    clients = results.read_table(run_dir, results.CLIENTS_FILE).to_dicts()
    server = results.read_table(run_dir, results.SERVER_FILE).to_dicts()
    lines = [f"run {record['run_id']}: {record['status']}"
             + (f": {record['reason']}" if record.get("reason") else "")]
    if record.get("setup_s") is not None:
        lines[0] += (f" in {record['duration_s']:.1f} s (setup {record['setup_s']:.1f} s,"
                     f" connecting {record.get('connect_s') or 0:.1f} s,"
                     f" teardown {record.get('teardown_s') or 0:.1f} s)")
    if record.get("quiet_wait_s"):
        lines.append(f"waited {record['quiet_wait_s']:.1f} s for a quiet host before connecting")
    if record.get("noisy"):
        lines.append(f"noisy: {record.get('noisy_reason')} (its times are suspect)")
    if not clients:
        return printable("\n".join(lines))
    lines.append(f"{'client':>6} {'proc':>4} {'connections':>12}  {'errno':<16} {'seconds':>8}")
    for r in clients:
        lines.append(f"{r['client']:>6} {r['proc']:>4} {r['connections'] or 0:>12,}  "
                     f"{r.get('error') or '-':<16} {r.get('elapsed_s') or 0:>8.2f}")
    totals = record.get("totals") or {}
    prediction = record.get("prediction") or {}
    if record.get("churn"):
        lines.append(_churn_line(run_dir, record["churn"],
                                 shared=record["params"].get("network") == "loopback"))
        if (record["churn"].get("verdict") or {}).get("sentence"):
            lines.append(f"churn model: {record['churn']['verdict']['sentence']}")
    elif record.get("server"):  # a real server (issue 21): its own model and verdict
        from tcplimits.engine.servers import summary_lines

        lines += summary_lines(record["server"], totals)
    else:
        lines.append(f"clients hold {totals.get('connections') or 0:,} connections "
                     f"(model: {prediction.get('total', 0):,}, limited by "
                     f"{prediction.get('limit')})")
    if server:
        errors = sorted({r['error'] for r in server if r.get('error')})
        lines.append(f"server accepted {totals.get('server_accepted') or 0:,} over "
                     f"{len(server)} worker(s)" + (f"; accept() errors: {', '.join(errors)}"
                                                   if errors else ""))
    from tcplimits.engine.hostceiling import summary_line

    lines += [line for line in [summary_line(record)] if line]
    comparison = (model.compare_run(run_row(record, Path(run_dir)), clients, server)
                  if record["status"] == results.STATUS_OK else None)  # finished runs only
    if comparison is not None:
        params = model.params_of(record["params"])
        lines.append(f"model: {model.limit_reason(params, prediction)}")
        lines += [f"note: {why}" for why in comparison.explanations]
    return printable("\n".join(lines))  # reasons and errors hold what containers said


def summary_data(run_dir: Path) -> dict:
    """`tcplimits run --json`: the run's outcome as data (what the table shows, and the
    model's notes); run.json in the run directory holds everything else."""
    from tcplimits import model, results
    from tcplimits.results.dataset import run_row

    record = results.read_run(run_dir)
    clients = results.read_table(run_dir, results.CLIENTS_FILE).to_dicts()
    server = results.read_table(run_dir, results.SERVER_FILE).to_dicts()
    keys = ("run_id", "status", "reason", "fault", "noisy", "noisy_reason", "duration_s",
            "setup_s", "connect_s", "teardown_s", "quiet_wait_s", "params", "resolved",
            "totals", "prediction", "churn")
    out = {key: record.get(key) for key in keys}
    out.update(run_dir=str(run_dir), clients=clients, server=server, model=None, notes=[])
    if clients and not record.get("churn"):
        comparison = model.compare_run(run_row(record, Path(run_dir)), clients, server)
        if comparison is not None:
            out["model"] = model.limit_reason(model.params_of(record["params"]),
                                              record.get("prediction") or {})
            out["notes"] = list(comparison.explanations)
    return out


def _churn_line(run_dir: Path, churn: dict, shared: bool = False) -> str:
    """Mode churn: the rate sustained and the TIME_WAIT peaks on each side (``shared``: on
    loopback, where every client is in one namespace)."""
    from tcplimits import results

    series = results.read_table(run_dir, results.CHURN_FILE).to_dicts()
    peaks = {role: max((r["time_wait"] for r in series
                        if r["role"] == role and r["time_wait"] is not None), default=0)
             for role in ("client", "server")}
    verdict = churn.get("verdict") or {}
    rate = verdict.get("rate")
    return (f"clients opened and closed {verdict.get('connections', 0):,} connections"
            + (f" at {rate:,.0f}/s" if rate else "")
            + f"; TIME_WAIT peak: {peaks['client']:,} on "
            + ("the clients (one namespace)" if shared else "a client")
            + f", {peaks['server']:,} on the server")


def _valid_id(value: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", value))


def _engine_or_none(command: str):
    """A Docker client, or None after one line saying the engine cannot be reached (or that
    its socket refuses this user, with the fix)."""
    import docker

    from tcplimits.engine import faults

    try:
        return docker.from_env()
    except docker.errors.DockerException as err:
        if not faults.is_engine_gone(err):
            raise
        print(f"tcplimits {command}: {faults.unreachable_reason(err)}", file=sys.stderr)
        return None


def _cmd_image(args: argparse.Namespace) -> int:
    from tcplimits.image import ImageError, ensure_image

    client = _engine_or_none("image")
    if client is None:
        return EXIT_MACHINE
    try:
        image = ensure_image(client, rebuild=args.rebuild, log=_log(args))
    except ImageError as err:
        print(f"tcplimits image: {err}", file=sys.stderr)
        return EXIT_FAILED
    tag = image.tags[0] if image.tags else image.id
    print(tag)
    if args.stamp:
        from tcplimits.results import write_text

        write_text(f"{tag}\n{image.id}\n", args.stamp)
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    import json

    from tcplimits.engine import probe_engine

    from tcplimits.engine import footprint, host

    client = _engine_or_none("probe")
    if client is None:
        return EXIT_MACHINE
    info = probe_engine(client, refresh=args.refresh, log=_log(args))
    # Host facts change from run to run (what else is open, tracked, free): read, not cached.
    info["host"] = (footprint.host_facts() if host.engine_is_local(client.api.base_url)
                    else "unknown: the engine is not on this machine")
    if isinstance(info["host"], dict):  # the figures of `tcplimits ceiling`
        from tcplimits.engine import hostceiling

        info["ceiling"] = hostceiling.as_json(
            hostceiling.ceilings(info["host"], info["engine_nofile_cap"]))
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            print("\n".join(f"  {k}: {_plain(v)}" for k, v in value.items()))
        else:
            print(f"{key}: {_plain(value)}")
    return EXIT_OK


def _plain(value) -> str:
    """A probe value as text: numbers with separators, lists and dicts compact."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _cmd_ceiling(args: argparse.Namespace) -> int:
    import json

    from tcplimits.engine import footprint, host, hostceiling, probe_engine

    client = _engine_or_none("ceiling")
    if client is None:
        return EXIT_MACHINE
    if not host.engine_is_local(client.api.base_url):
        print("tcplimits ceiling: the engine is not on this machine: its host's limits cannot "
              "be read here", file=sys.stderr)
        return EXIT_UNSUPPORTED
    cap = probe_engine(client)["engine_nofile_cap"]
    facts = footprint.host_facts()
    found = hostceiling.ceilings(facts, cap)
    print(json.dumps({"engine_nofile_cap": cap, "host": facts,
                      **hostceiling.as_json(found)}, indent=2) if args.json
          else hostceiling.table(found, cap))
    return EXIT_OK


def _cmd_clean(args: argparse.Namespace) -> int:
    from tcplimits.engine import cleanup

    client = _engine_or_none("clean")
    if client is None:
        return EXIT_MACHINE
    found = cleanup.find_leftovers(client)
    if args.everyone and not args.all:
        print("tcplimits clean: --everyone goes with --all", file=sys.stderr)
        return EXIT_USAGE
    # --all takes this user's own (by the uid label) unless --everyone says every user's.
    doomed = ([item for item in found if args.everyone or item.mine] if args.all
              else cleanup.dead(found))
    kept = [item for item in found if item not in doomed]
    if args.all and doomed and not args.yes:
        whose = "every user's" if args.everyone else "yours"
        print(f"tcplimits clean --all would remove ({whose}), whether or not their runs are "
              "alive:")
        for item in doomed:
            print(printable(f"  {item.describe()}"))
        print("nothing removed: add --yes to remove these", file=sys.stderr)
        return EXIT_USAGE
    for item in doomed:
        print(printable(f"removing {item.describe()}"))
    removed = cleanup.remove(doomed)
    print(f"removed {removed['containers']} container(s) and {removed['networks']} network(s)")
    others = [item for item in kept if not item.mine]
    if args.all and others:
        print(f"kept {len(others)} resource(s) of other users or of an older tcplimits; "
              "`tcplimits clean --all --everyone --yes` removes them too")
    elif kept:
        print(f"kept {len(kept)} resource(s) whose owner is alive or cannot be proven dead "
              "(another PID namespace, host or boot, or an older tcplimits); "
              "`tcplimits clean --all --yes` removes yours")
    return EXIT_OK


def _cmd_points(args: argparse.Namespace) -> int:
    from tcplimits.config.grid import ConfigError, load_config, points

    if args.config and args.configfile and args.config != args.configfile:
        print(f"tcplimits points: two configs given ({args.config}, --configfile "
              f"{args.configfile}): give one", file=sys.stderr)
        return EXIT_USAGE
    path = args.configfile or args.config or DEFAULT_CONFIG
    try:
        found = points(load_config(path))
    except ConfigError as err:
        err.source = err.source or path
        raise
    if args.json:
        print(json.dumps([{"id": point.id, "repetition": point.repetition,
                           "params": point.params.to_dict(), "flags": point.params.to_args()}
                          for point in found], indent=2))
        return EXIT_OK
    for point in found:
        print(point.id, " ".join(point.params.to_args()))
    return EXIT_OK


def _cmd_dataset(args: argparse.Namespace) -> int:
    from tcplimits.results.dataset import build_dataset

    counts = build_dataset([Path(p) for p in args.runs], Path(args.out),
                           report=lambda m: print(printable(f"tcplimits dataset: {m}"),
                                                  file=sys.stderr))
    print(", ".join(f"{name}: {n} rows" for name, n in counts.items()))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from tcplimits.report.render import REPORT_SOURCE, render_report
    from tcplimits.results import SUMMARY_FILE

    source = Path(args.source) if args.source else REPORT_SOURCE
    for path, what in ((Path(args.dataset), "--dataset"), (source, "--source")):
        if not path.exists():
            print(f"tcplimits report: {what} {path}: no such "
                  f"{'directory' if what == '--dataset' else 'file'}", file=sys.stderr)
            return EXIT_USAGE
    out = render_report(Path(args.dataset), Path(args.out), source=source,
                        config=Path(args.config_file) if args.config_file else None)
    print(out)
    _write_summary(Path(args.dataset), out.parent / SUMMARY_FILE)
    if args.browser_check == "no":
        return EXIT_OK
    from tcplimits.report.browser import browser_available, check_in_browser

    missing = browser_available()
    if missing:
        if args.browser_check == "yes":
            print(f"tcplimits report: cannot check the page in a browser: {missing} "
                  "(Debian: apt-get install chromium chromium-driver)", file=sys.stderr)
            return EXIT_FAILED
        _log(args)(f"browser check skipped ({missing})")
        return EXIT_OK
    screenshot = out.parent / "screenshot.png"
    problems = check_in_browser(out, screenshot)
    for problem in problems:
        print(f"tcplimits report: browser check: {problem}", file=sys.stderr)
    print(screenshot)
    return EXIT_FAILED if problems else EXIT_OK


def _write_summary(dataset_dir: Path, target: Path) -> None:
    """The sweep's summary (``findings.sweep_summary``), printed and written beside the page,
    where the workflow shows it when it finishes."""
    from tcplimits.report import findings
    from tcplimits import results

    text = findings.sweep_summary(findings.load(dataset_dir))
    results.write_text(text + "\n", target)
    print(printable(text))


DEFAULT_CONFIG = "config/config.yaml"


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
        "image", help="build the agent image (and its Debian base) if missing",
        description="Build the image the experiments run in. The tag follows a hash of the "
        "container programs: unchanged code is not rebuilt. Without a registry the base is "
        "built once from Debian packages with debootstrap (needs root, ~1 min).",
        epilog=_epilog(["tcplimits image", "tcplimits image --rebuild --stamp image.txt"],
                       codes=(EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_MACHINE),
                       env=("DOCKER_HOST", "TCPLIMITS_BASE_IMAGE")))
    p.add_argument("--rebuild", action="store_true", help="rebuild the agent image")
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


def main(argv: list[str] | None = None) -> int:
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
    except BrokenPipeError:  # `tcplimits points | head`: the reader left; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
