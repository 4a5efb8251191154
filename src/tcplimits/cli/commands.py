"""The `tcplimits` subcommands, one function each (``_cmd_<name>``), and the run's summary:
each reads its flags, calls its stage, and returns the exit code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tcplimits.engine.faults import EXIT_FAILED, EXIT_MACHINE, EXIT_OK, EXIT_UNSUPPORTED, EXIT_USAGE
from tcplimits.config.params import FIELDS, ParamError, RunParams
from tcplimits.terminal import printable

EXIT_INTERRUPTED = 130
DEFAULT_CONFIG = "config/config.yaml"

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
    from tcplimits.engine.plan import samples_per_process

    try:  # before any container: a run must not fail at the end for want of a place to write
        outdir.prepare(Path(args.out), force=args.force, need_bytes=outdir.expected_bytes(
            params.clients * params.procs, samples_per_process(params.clients * params.procs)))
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
    from tcplimits.image import ImageError, ensure_image, extra

    client = _engine_or_none("image")
    if client is None:
        return EXIT_MACHINE
    names = [n for n in extra.EXTRA if args.all or getattr(args, n)]
    try:
        images = [ensure_image(client, rebuild=args.rebuild, log=_log(args))]
        images += [extra.ensure(client, name, log=_log(args)) for name in names]
    except ImageError as err:
        print(f"tcplimits image: {err}", file=sys.stderr)
        return EXIT_FAILED
    # the stamp: a tag line and an image id line per image, the agent image's first
    lines = [line for image in images
             for line in (image.tags[0] if image.tags else image.id, image.id)]
    print("\n".join(lines[::2]))
    if args.stamp:
        from tcplimits.results import write_text

        write_text("".join(f"{line}\n" for line in lines), args.stamp)
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
