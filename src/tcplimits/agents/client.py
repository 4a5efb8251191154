"""Client agent: open TCP connections to the server until the first failure, never closing
them; report every outcome as JSON lines on stdout; hold the connections until SIGTERM.

Runs inside a client container with the standard library only. The container's main process
forks --procs workers; they share the container's ephemeral port pool, each has its own
RLIMIT_NOFILE. Given several server addresses, each process spreads its connections over
them round-robin (each (source, destination) pair has a port pool of its own).

Lines written (one JSON object each, field "event"):
  ready     per container: port range in force, ports of it already held, nofile
  progress  per process, every --sample-every connections: connections, t_s, connect_latency_s
  result    per process, once: connections, errno, error, message, elapsed_s, cpu_s (user +
            system CPU seconds of the process meanwhile)

On SIGTERM every held connection is reset (--close abort), so that nothing of the run stays
in the host's kernel once the container is gone.
"""

import argparse
import os
import resource
import signal
import socket
import sys
import time

try:
    from . import common
except ImportError:  # run as a script inside the container
    import common


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", default="server",
                   help="server host name or address; several separated by commas")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--client", type=int, default=1, help="this container's number")
    p.add_argument("--procs", type=int, default=1, help="worker processes")
    p.add_argument("--connect-timeout", type=float, default=3.0)
    p.add_argument("--max-connections", type=int, default=0, help="per process; 0 = unbounded")
    p.add_argument("--sample-every", type=int, default=100, help="connections between samples")
    p.add_argument("--wait-signal", action="store_true",
                   help="wait for SIGUSR1 before connecting (the engine starts all clients at once)")
    p.add_argument("--close", choices=common.CLOSE_MODES, default="abort",
                   help="on SIGTERM: abort (RST, nothing lingers in the kernel) or graceful (FIN)")
    return p.parse_args(argv)


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


def connect_until_failure(args, proc, server_addrs):
    """One worker: connect in a loop, round-robin over the server addresses, keep every socket,
    stop at the first failure."""
    held = []  # raw descriptors: an int costs less than a socket object
    turn = proc - 1  # processes start on different addresses
    cpu_start = _cpu_s()
    start = time.monotonic()
    window_start, window_latency = 0, 0.0
    failure = None
    limit = args.max_connections or None
    while limit is None or len(held) < limit:
        t0 = time.monotonic()
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE: out of descriptors
            failure = exc
            break
        try:
            s.settimeout(args.connect_timeout)
            s.connect(server_addrs[turn % len(server_addrs)])
            turn += 1
        except OSError as exc:
            s.close()
            failure = exc
            break
        window_latency += time.monotonic() - t0
        held.append(s.detach())
        n = len(held)
        if n - window_start >= args.sample_every:
            common.emit("progress", client=args.client, proc=proc, connections=n,
                        t_s=round(time.monotonic() - start, 6),
                        connect_latency_s=window_latency / (n - window_start))
            window_start, window_latency = n, 0.0
    n = len(held)
    elapsed = time.monotonic() - start
    if n > window_start:
        common.emit("progress", client=args.client, proc=proc, connections=n,
                    t_s=round(elapsed, 6), connect_latency_s=window_latency / (n - window_start))
    if failure is None:
        number, name, message = None, "MAX_CONNECTIONS", f"reached --max-connections {limit}"
    else:
        number, name, message = common.describe_error(failure)
    common.emit("result", client=args.client, proc=proc, connections=n, errno=number,
                error=name, message=message, elapsed_s=round(elapsed, 6),
                cpu_s=round(_cpu_s() - cpu_start, 6))
    return held


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def worker(args, proc, server_addrs, started):
    """Signals stay blocked in workers and are taken with sigwaitinfo(): no race between
    checking a flag and sleeping."""
    if not started and signal.sigwaitinfo({signal.SIGUSR1} | STOP_SIGNALS).si_signo != signal.SIGUSR1:
        return 0
    held = connect_until_failure(args, proc, server_addrs)
    signal.sigwaitinfo(STOP_SIGNALS)  # hold every connection until told to stop
    common.close_all(held, args.close)
    return 0


def main(argv=None):
    args = parse_args(argv)
    lo, hi = port_range()
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    server_addrs = [(socket.gethostbyname(name.strip()), args.port)
                    for name in args.server.split(",") if name.strip()]
    held = held_in_range(lo, hi)
    # Block before forking so that a signal arriving early waits, pending, for sigwaitinfo.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGCHLD} | STOP_SIGNALS)
    children = []
    for proc in range(1, args.procs + 1):
        pid = os.fork()
        if pid == 0:
            os._exit(worker(args, proc, server_addrs, started=not args.wait_signal))
        children.append(pid)
    common.emit("ready", client=args.client, port_range=f"{lo}-{hi}", held=held,
                nofile_soft=nofile[0], nofile_hard=nofile[1], server=server_addrs[0][0],
                destinations=len(server_addrs),
                procs=len(children))
    live = set(children)
    while live:
        signo = signal.sigwaitinfo({signal.SIGUSR1, signal.SIGCHLD} | STOP_SIGNALS).si_signo
        if signo == signal.SIGUSR1:
            common.forward_signal(children, signal.SIGUSR1)
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
