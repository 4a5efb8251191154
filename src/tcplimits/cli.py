"""`tcplimits` command line: run one experiment, build the image, probe the engine, build the
dataset and the report. Every command has --help; bad input exits 2 with one line naming the
flag and value, before any container is created.

`tcplimits run` exits 0 (ok), 1 (the run failed; run.json says why), 2 (bad input, or --out
refused or not writable), 3 (unsupported parameters), 4 (the Docker engine or the disk failed
the run: not hidden by --exit-zero, so a workflow retries it), 130 (interrupted)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tcplimits import __version__
from tcplimits.engine.faults import EXIT_FAILED, EXIT_MACHINE, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from tcplimits.config.params import FIELDS, ParamError, RunParams
from tcplimits.terminal import printable


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # pragma: no cover - argparse path
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    for field in FIELDS.values():
        default = "engine cap" if field.name == "server_nofile" else field.default
        default = "none" if default is None else default
        # Values stay strings here: RunParams validates them and names the flag on error.
        p.add_argument(field.flag, dest=field.name, default=None, metavar=field.name.upper(),
                       help=f"{field.help} (default: {default})")


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
                                progress=not args.quiet)
    except KeyboardInterrupt:
        written = (Path(args.out) / "run.json").exists()
        print("\ntcplimits run: interrupted; nothing of the run is left on the engine"
              + (f"; its partial results (status failed) are in {args.out}" if written else ""),
              file=sys.stderr)
        return 130
    if record.get("fault") in faults.MACHINE_FAULTS:
        print(printable(f"tcplimits run: {record['reason']}"), file=sys.stderr)
        return EXIT_MACHINE
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
    """A Docker client, or None after one line saying the engine cannot be reached."""
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
        image = ensure_image(client, rebuild=args.rebuild,
                             log=lambda m: print(m, file=sys.stderr))
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
    info = probe_engine(client, refresh=args.refresh)
    # Host facts change from run to run (what else is open, tracked, free): read, not cached.
    info["host"] = (footprint.host_facts() if host.engine_is_local(client.api.base_url)
                    else "unknown: the engine is not on this machine")
    if isinstance(info["host"], dict):  # the figures of `tcplimits ceiling`
        from tcplimits.engine import hostceiling

        info["ceiling"] = hostceiling.as_json(
            hostceiling.ceilings(info["host"], info["engine_nofile_cap"]))
    print(json.dumps(info, indent=2))
    return EXIT_OK


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
    from tcplimits.config.grid import load_config, points

    for point in points(load_config(args.config)):
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
    from tcplimits.report.render import render_report
    from tcplimits.results import SUMMARY_FILE

    out = render_report(Path(args.dataset), Path(args.out), source=Path(args.source),
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
        print(f"browser check skipped ({missing})", file=sys.stderr)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tcplimits",
        description="How many TCP connections can a server and its clients hold, and what "
        "stops them? Real experiments on the Docker engine.",
    )
    parser.add_argument("--version", action="version", version=f"tcplimits {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("run", help="run one experiment and write its run directory",
                       description="Start one server container and CLIENTS client containers on "
                       "a fresh internal bridge network; each client process opens connections "
                       "until the first failure. Prints a table, writes the run directory, "
                       "removes every container and the network.")
    _add_run_flags(p)
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--run-id", default=None, help="run id (default: made from time and parameters)")
    p.add_argument("--force", action="store_true",
                   help="replace the run directory --out already holds (refused otherwise, so "
                   "that two runs never mix in one directory)")
    p.add_argument("--quiet", action="store_true", help="no live count")
    p.add_argument("--exit-zero", action="store_true",
                   help="exit 0 whenever the run directory was written, whatever the run's "
                   "status (for workflows: failures are recorded, not fatal); the engine or "
                   "the disk failing the run still exits 4")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("image", help="build the agent image (and its Debian base) if missing",
                       description="Build the image the experiments run in. The tag follows a "
                       "hash of the container programs: unchanged code is not rebuilt.")
    p.add_argument("--rebuild", action="store_true", help="rebuild the agent image")
    p.add_argument("--stamp", help="also write the tag and image id to this file")
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser("probe", help="measure what the engine allows (nofile cap, versions) "
                       "and read the host's limits",
                       description="Find the highest nofile the engine can give a container "
                       "(measured once per engine, then cached), read kernel, Docker and "
                       "conntrack facts; then "
                       "the host settings a big point depends on (fs.file-max, fs.nr_open, "
                       "nf_conntrack_max and count, bridge-nf-call-iptables, tcp_mem, "
                       "tcp_max_orphans, MemAvailable, sockstat), read fresh each time, and the "
                       "host's ceiling per network mode (as `tcplimits ceiling --json`).")
    p.add_argument("--refresh", action="store_true",
                   help="measure the nofile cap again, ignoring the cache")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("ceiling", help="the most connections this host can hold, per "
                       "network mode, and the limit that stops it",
                       description="For loopback and bridge: the most concurrent connections "
                       "this host can hold with both ends on it and its settings as they are "
                       "(fs.file-max, memory with a safety margin, conntrack), the limit that "
                       "binds, the next one and its margin, the layout that holds it and the "
                       "command that raises the binding limit. Read fresh each time; "
                       "tcplimits never changes a host setting.")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.set_defaults(func=_cmd_ceiling)

    p = sub.add_parser("clean", help="remove leftover containers and networks of dead runs",
                       description="Remove containers and networks labelled tcplimits=1 whose "
                       "owning process is provably dead: same kernel boot and PID namespace, "
                       "and no process with its pid and start time. Others are kept and "
                       "listed; --all --yes removes every one of yours, --all --everyone --yes "
                       "every user's.")
    p.add_argument("--all", action="store_true",
                   help="every labelled container and network of yours, also those of live "
                   "runs and those whose owner cannot be checked: lists them, removes them "
                   "with --yes")
    p.add_argument("--everyone", action="store_true",
                   help="with --all: every user's, and those of an older tcplimits that "
                   "recorded no user")
    p.add_argument("--yes", action="store_true", help="confirm --all")
    p.set_defaults(func=_cmd_clean)

    p = sub.add_parser("points", help="list the points of a workflow config",
                       description="Print each grid point's id and its `tcplimits run` flags.")
    p.add_argument("config", nargs="?", default="config/config.yaml")
    p.set_defaults(func=_cmd_points)

    p = sub.add_parser("dataset", help="concatenate run directories into one dataset",
                       description="Write runs, clients, server and series Parquet files, "
                       "parameters as columns, from run directories.")
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", required=True, help="dataset directory")
    p.set_defaults(func=_cmd_dataset)

    p = sub.add_parser("report", help="render the HTML report from a dataset",
                       description="Render report/report.qmd with Quarto when installed, else "
                       "with jupytext + nbclient + nbconvert; one offline HTML file. Prints "
                       "the sweep's summary and writes it beside the page (summary.txt).")
    p.add_argument("--dataset", required=True, help="dataset directory")
    p.add_argument("--out", required=True,
                   help="report directory (index.html, data/, summary.txt)")
    p.add_argument("--source", default="report/report.qmd", help="the .qmd to render")
    p.add_argument("--config-file", metavar="PATH",
                   help="the sweep's config (Snakemake passes its --configfile): copied "
                   "beside the page as config.yaml; the page gives the command that reruns it")
    p.add_argument("--browser-check", choices=["auto", "yes", "no"], default="auto",
                   help="open the page in headless Chromium with networking off, fail on a "
                   "console error or an undrawn chart, save screenshot.png beside it "
                   "(auto: when Chromium, chromedriver and selenium are installed)")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tcplimits.engine.cleanup import Interrupted, signals_raise

    args = build_parser().parse_args(argv)
    try:  # SIGTERM or SIGHUP while building the image or probing: its cleanup runs too
        with signals_raise():
            return args.func(args)
    except Interrupted as err:
        print(f"\ntcplimits {args.command}: interrupted ({err})", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
