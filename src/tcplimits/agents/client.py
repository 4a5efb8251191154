"""Client agent: open TCP connections to the server until the first failure, never closing
them; report every outcome as JSON lines on stdout; hold the connections until SIGTERM.
With --mode churn, each process opens, uses and closes connections instead (churn.py).

Runs inside a client container with the standard library only. The container's main process
forks --procs workers; they share the container's ephemeral port pool, each has its own
RLIMIT_NOFILE. Given several server addresses, each process spreads its connections over
them round-robin (each (source, destination) pair has a port pool of its own).

Each process spreads its connections over (source address, server address, server port)
pairs, round-robin, and gets its source port as --bind-mode says (see tcplimits.fourtuple):
a pair whose port pool runs out is dropped and the others go on; any other error stops the
process. With one pair (the default) that is "connect until the first failure".

Lines written (one JSON object each, field "event"):
  ready     per container: port range in force, sockets of it already held, nofile, the
            capabilities the agent holds (none: containers run with cap_drop ALL)
  progress  per process, every --sample-every connections: connections, t_s, connect_latency_s
  pairs     per process, before its result, in chunks: [source, address, port, connections,
            error] per pair
  result    per process, once: connections (held: still established when counted), opened
            (connect() succeeded), closed_by_peer (opened, then closed or reset by the server
            before the count), peer_message (the first bytes a closing server sent, or null),
            errno, error, message, elapsed_s, cpu_s (user + system CPU seconds of the
            process meanwhile)
  churn, time_wait   in churn mode (see churn.py)

Held means established when counted: once a process stops connecting (with --check-signal:
once the engine says every process of the run has, SIGUSR2) it waits --settle seconds and
checks every connection it opened (common.check_held); elapsed_s ends before that wait.
  connected per process, with --check-signal, when it stops connecting: opened

On SIGTERM every held connection is reset (--close abort), so that nothing of the run stays
in the host's kernel once the container is gone.
"""

import argparse
import array
import collections
import errno
import os
import resource
import signal
import socket
import sys
import time

try:
    from . import churn, common
except ImportError:  # run as a script inside the container
    import churn
    import common


BIND_MODES = ("connect", "bind", "bind-no-port")
# errnos that mean "this pair's port pool is exhausted": drop the pair, go on with the others.
POOL_ERRNOS = {errno.EADDRNOTAVAIL, errno.EADDRINUSE}
PAIRS_PER_LINE = 40  # keeps each line under PIPE_BUF, so lines of processes never interleave


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def _strs(text):
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="server",
                   help="server host name or address; several separated by commas")
    p.add_argument("--port", type=_ints, default=[5000], help="server port(s), comma-separated")
    p.add_argument("--sources", type=_strs, default=[],
                   help="extra source addresses to bind (modes bind and bind-no-port), "
                        "comma-separated; the address the route picks always comes first")
    p.add_argument("--bind-mode", choices=BIND_MODES, default="connect",
                   help="connect: plain connect(); bind: bind((source, 0)) then connect(); "
                        "bind-no-port: bind() with IP_BIND_ADDRESS_NO_PORT, then connect()")
    p.add_argument("--client", type=int, default=1, help="this container's number")
    p.add_argument("--procs", type=int, default=1, help="worker processes")
    p.add_argument("--connect-timeout", type=float, default=3.0)
    p.add_argument("--max-connections", type=int, default=0, help="per process; 0 = unbounded")
    p.add_argument("--sample-every", type=int, default=100, help="connections between samples")
    p.add_argument("--wait-signal", action="store_true",
                   help="wait for SIGUSR1 before connecting (the engine starts all clients at once)")
    p.add_argument("--wait-sources", type=float, default=0.0, metavar="SECONDS",
                   help="wait up to SECONDS until every --sources address exists (a compose "
                        "file's helper service adds them after this container starts)")
    p.add_argument("--wait-route", metavar="GATEWAY", default=None,
                   help="wait until every server address is routed via GATEWAY (nat gateway in "
                        "a compose file: a helper service adds the routes after this container "
                        "starts)")
    p.add_argument("--wait-route-s", type=float, default=60.0, metavar="SECONDS",
                   help="how long --wait-route waits")
    p.add_argument("--close", choices=common.CLOSE_MODES, default="abort",
                   help="on SIGTERM: abort (RST, nothing lingers in the kernel) or graceful (FIN)")
    p.add_argument("--check-signal", action="store_true",
                   help="once done connecting, report 'connected' and wait for SIGUSR2 before "
                        "the held check (the engine sends it when every client process of the "
                        "run has stopped connecting: the check sees the end of the phase)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between the last connect() and the check that every opened "
                        "connection is still established (a server may accept, then close)")
    add_churn_args(p)
    args = p.parse_args(argv)
    args.connect_timeval = common.timeval(args.connect_timeout)  # SO_SNDTIMEO, packed once
    return args


def add_churn_args(p):
    p.add_argument("--mode", choices=("hold", "churn"), default="hold",
                   help="hold: keep every connection; churn: open, exchange, close, repeat")
    p.add_argument("--rate", default="max", help="churn: connections per second per process, or max")
    p.add_argument("--duration", type=float, default=10.0, help="churn: seconds of churning")
    p.add_argument("--closer", choices=tuple(churn.CLOSERS), default="client",
                   help="churn: which end closes first (and keeps TIME_WAIT)")


def churn_process(args, proc, server_addrs):
    rate = None if str(args.rate).lower() == "max" else float(args.rate)
    churn.churn_loop(make_pairs(args, server_addrs), client=args.client, proc=proc, rate=rate,
                     duration=args.duration, closer=args.closer,
                     connect_timeout=args.connect_timeout, bind_mode=args.bind_mode,
                     pairs_per_line=PAIRS_PER_LINE)
    return []


def port_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo, hi = (int(v) for v in f.read().split())
    return lo, hi


def held_in_range(lo, hi):
    """Sockets of this namespace whose local port is in the ephemeral range before we start:
    each such port is one connection fewer (a port held by bind() is never reused by connect())."""
    return [
        {"addr": addr, "port": port, "state": state}
        for addr, port, state in common.tcp_sockets()
        if lo <= port <= hi
    ]


def _cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_pairs(args, server_addrs):
    """(source, address, port) in spreading order; plain connect() lets the route pick the
    source (None). Same order as tcplimits.fourtuple.pairs."""
    if args.bind_mode == "connect":
        sources = [None]
    else:
        primary = common.route_source(server_addrs[0])
        sources = [primary] + [a for a in args.sources if a != primary]
    return [(s, a, p) for s in sources for a in server_addrs for p in args.port]


def open_one(args, pair):
    """One connection of ``pair``, its source port chosen as --bind-mode says."""
    source, addr, port = pair
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if args.bind_mode == "bind-no-port":
            s.setsockopt(socket.IPPROTO_IP, common.IP_BIND_ADDRESS_NO_PORT, 1)
        if args.bind_mode != "connect":
            s.bind((source, 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, args.connect_timeval)
        common.connect(s, (addr, port))
    except BaseException:
        s.close()
        raise
    return s


def connector(args, pairs):
    """connect_run(live, turn, want, keep, keep_owner) as common.libc_connector describes it,
    over ``pairs``. A plain connect() goes through libc where it can; the bind modes, and
    hosts without ctypes or libc, through open_one."""
    libc = common.load_libc() if args.bind_mode == "connect" else None
    if libc is not None:
        sockaddrs = [common.sockaddr_in(addr, port) for _, addr, port in pairs]
        return common.libc_connector(libc, args.connect_timeval, sockaddrs)
    monotonic = time.monotonic

    # common.libc_connector's loop around open_one (kept apart: the libc loop stays one frame
    # with its three calls inline)
    def connect_run(live, turn, want, keep, keep_owner):
        count, last = len(live), None
        at = turn % count
        for made in range(want):
            index = live[at]
            try:
                fd = open_one(args, pairs[index]).detach()
            except OSError as exc:  # EMFILE in socket(), EADDRINUSE in bind(), ... in connect()
                return made, last, exc
            last = monotonic()
            keep(fd)
            keep_owner(index)
            at += 1
            if at == count:
                at = 0
        return want, last, None
    return connect_run


def local_address(fd):
    s = socket.socket(fileno=fd)
    try:
        return s.getsockname()[0]
    finally:
        s.detach()


def connect_until_failure(args, proc, server_addrs):
    """One worker: connect round-robin over the pairs, keep every descriptor, drop a pair when
    its pool is exhausted, stop when every pair is or at the first other failure.

    Connections come in runs, one per progress sample (connector: a run is one Python
    frame); the clock is read once per connection: a sample's connect_latency_s is the time
    of its window (from the previous sample) over its connections, less failed attempts."""
    held = []  # raw descriptors: an int costs less than a socket object
    pairs = make_pairs(args, server_addrs)
    connect_run = connector(args, pairs)
    owner = array.array("H")  # the pair of each held descriptor (PAIRS_MAX fits 16 bits)
    errors = [None] * len(pairs)
    live = list(range(len(pairs)))
    turn = (proc - 1) % len(pairs)  # processes start on different pairs
    cpu_start = _cpu_s()
    monotonic, keep, keep_owner = time.monotonic, held.append, owner.append
    sample_every = args.sample_every
    start = monotonic()
    window_start, window_t0, last = 0, start, start
    failure = None
    limit = args.max_connections or None
    n = 0
    while live and (limit is None or n < limit):
        want = window_start + sample_every - n
        made, made_last, stopped = connect_run(live, turn, want if limit is None
                                               else min(want, limit - n), keep, keep_owner)
        n += made
        turn = (turn + made) % len(live)
        if made_last is not None:
            last = made_last
        if stopped is not None:
            index = live[turn]
            errors[index] = common.describe_error(stopped)[1]
            failure = stopped
            if stopped.errno in POOL_ERRNOS and len(live) > 1:
                live.pop(turn)  # the next pair takes its place in the turn
                turn %= len(live)
                now = monotonic()
                window_t0 += now - last  # a failed attempt is no connection's time
                last = now
                continue
            break
        if n - window_start >= sample_every:
            common.emit("progress", client=args.client, proc=proc, connections=n,
                        t_s=round(last - start, 6),
                        connect_latency_s=(last - window_t0) / (n - window_start))
            window_start = n
            window_t0 = last = monotonic()  # writing the sample is no connection's time
    elapsed = monotonic() - start
    if n > window_start:
        common.emit("progress", client=args.client, proc=proc, connections=n,
                    t_s=round(elapsed, 6),
                    connect_latency_s=(last - window_t0) / (n - window_start))
    settle = args.settle
    if args.check_signal:
        common.emit("connected", client=args.client, proc=proc, opened=n)
        if signal.sigwaitinfo({signal.SIGUSR2} | STOP_SIGNALS).si_signo != signal.SIGUSR2:
            global _STOPPING
            _STOPPING, settle = True, 0.0  # told to stop: check at once, then close
    closed, peer_message = settle_and_check(held, settle)
    rows = pair_rows(pairs, held, owner, closed, errors)
    for first in range(0, len(rows), PAIRS_PER_LINE):
        common.emit("pairs", client=args.client, proc=proc,
                    pairs=rows[first:first + PAIRS_PER_LINE])
    if failure is None:
        number, name, message = None, "MAX_CONNECTIONS", f"reached --max-connections {limit}"
    else:
        number, name, message = common.describe_error(failure)
    common.emit("result", client=args.client, proc=proc, connections=n - len(closed), opened=n,
                closed_by_peer=len(closed), peer_message=peer_message, errno=number,
                error=name, message=message, elapsed_s=round(elapsed, 6),
                cpu_s=round(_cpu_s() - cpu_start, 6))
    return held


def pair_rows(pairs, held, owner, closed, errors):
    """[source, address, port, connections held, error] per pair, counted from ``owner`` (the
    pair of each held descriptor) once connecting is over, not per connection. A pair left to
    the route (plain connect()) shows the source its first connection got."""
    opened = collections.Counter(owner)
    gone = collections.Counter(owner[i] for i in closed)  # pairs count held connections too
    rows = []
    for index, (source, addr, port) in enumerate(pairs):
        if source is None and opened[index]:
            source = local_address(held[owner.index(index)])
        rows.append([source, addr, port, opened[index] - gone[index], errors[index]])
    return rows


def settle_and_check(held, settle_s):
    """Wait ``settle_s`` (the server takes what its accept queue holds, and may close it), then
    (indexes of the connections the peer closed, its first bytes) from common.check_held."""
    if not held:
        return [], None
    if settle_s > 0:
        time.sleep(settle_s)
    return common.check_held(held)


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_STOPPING = False  # a stop signal already taken (while waiting for the check signal)


def worker(args, proc, server_addrs, started):
    """Signals stay blocked in workers and are taken with sigwaitinfo(): no race between
    checking a flag and sleeping."""
    if not started and signal.sigwaitinfo({signal.SIGUSR1} | STOP_SIGNALS).si_signo != signal.SIGUSR1:
        return 0
    if args.mode == "churn":
        held = churn_process(args, proc, server_addrs)
    else:
        held = connect_until_failure(args, proc, server_addrs)
    if not _STOPPING:
        signal.sigwaitinfo(STOP_SIGNALS)  # hold every connection until told to stop
    common.close_all(held, args.close)
    return 0


def wait_for_sources(sources, seconds):
    """Return once every address can be bound; exit with a message after ``seconds``."""
    end = time.monotonic() + seconds
    missing = list(sources)
    while True:
        missing = [a for a in missing if not _bindable(a)]
        if not missing:
            return
        if time.monotonic() >= end:
            sys.exit(f"client: source addresses {', '.join(missing)} still missing after "
                     f"{seconds:g} s (--wait-sources)")
        time.sleep(0.1)


def _hex_addr(addr):
    """An IPv4 address as /proc/net/route writes it (the __be32, printed as a host int)."""
    return "%08X" % int.from_bytes(socket.inet_aton(addr), "little")


def routed_via(dests, gateway, table="/proc/net/route"):
    """The addresses of ``dests`` that have a host route (/32) via ``gateway``."""
    found = set()
    with open(table) as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if len(cols) >= 8 and cols[2] == _hex_addr(gateway) and cols[7] == "FFFFFFFF":
                found.add(cols[1])
    return [d for d in dests if _hex_addr(d) in found]


def wait_for_route(dests, gateway, seconds):
    """Return once every address of ``dests`` is routed via ``gateway``; exit with a
    message after ``seconds``."""
    end = time.monotonic() + seconds
    while len(routed_via(dests, gateway)) < len(dests):
        if time.monotonic() >= end:
            missing = sorted(set(dests) - set(routed_via(dests, gateway)))
            sys.exit(f"client: no route to {', '.join(missing)} via {gateway} after "
                     f"{seconds:g} s (--wait-route)")
        time.sleep(0.1)


def _bindable(addr):
    with socket.socket() as s:
        try:
            s.bind((addr, 0))
            return True
        except OSError:  # EADDRNOTAVAIL until the address is on an interface
            return False


def main(argv=None):
    args = parse_args(argv)
    if args.wait_sources:
        wait_for_sources(args.sources, args.wait_sources)
    lo, hi = port_range()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    server_addrs = [socket.gethostbyname(name) for name in _strs(args.server)]
    if args.wait_route:
        wait_for_route(server_addrs, args.wait_route, args.wait_route_s)
    held = held_in_range(lo, hi)
    # Block before forking so that a signal arriving early waits, pending, for sigwaitinfo.
    signal.pthread_sigmask(signal.SIG_BLOCK,
                           {signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD} | STOP_SIGNALS)
    common.load_libc()  # once, inherited by every process (see server.py)
    children = []
    for proc in range(1, args.procs + 1):
        pid = os.fork()
        if pid == 0:
            os._exit(worker(args, proc, server_addrs, started=not args.wait_signal))
        children.append(pid)
    common.emit("ready", client=args.client, port_range=f"{lo}-{hi}", held=held,
                nofile_soft=nofile[0], nofile_hard=nofile[1], server=server_addrs[0],
                servers=server_addrs, destinations=len(server_addrs), ports=args.port,
                sources=args.sources,
                bind_mode=args.bind_mode, capabilities=common.capabilities(), procs=len(children))
    live = set(children)
    # churn: the main process counts the namespace's TIME_WAIT sockets while it waits
    wait = (churn.TimeWaitSampler("client", args.client).wait if args.mode == "churn"
            else signal.sigwaitinfo)
    while live:
        signo = wait({signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD} | STOP_SIGNALS).si_signo
        if signo in (signal.SIGUSR1, signal.SIGUSR2):  # start connecting; check what is held
            common.forward_signal(children, signo)
        elif signo in STOP_SIGNALS:
            common.forward_signal(live, signal.SIGTERM)
        while live:  # reap whoever has exited
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            live.discard(pid)
            if os.waitstatus_to_exitcode(status) != 0:
                common.emit("worker_exit", client=args.client, pid=pid,
                            code=os.waitstatus_to_exitcode(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
