"""Server agent: listen on one or more ports, accept and hold every connection, count them, and
report accept() errors (EMFILE when out of descriptors) instead of dying.

Runs inside the server container with the standard library only. The main process listens
(on every address of the container: extra addresses answer too), then forks --workers
processes that share the listening sockets, each with its own RLIMIT_NOFILE; they accept in
turn, one until it is out of descriptors, then the next (serve). Lines written
(JSON, field "event"):
  listening  once, when the socket accepts connections
  progress   per worker, at most every 0.25 s while its count changes: accepted
  result     per worker, on SIGTERM: accepted, errno, error, message, accept_errors,
             conntrack (entries tracked in this namespace while the connections were held;
             null where the namespace has no table); listen_drops (SYNs the namespace dropped
             at a listener so far, TcpExt ListenDrops: a full accept queue among them);
             cpu_s (user + system CPU seconds of the worker until then)
  worker_exit  a worker that exited with a non-zero code (killed, out of memory): worker,
             pid, code (negative: the signal)
  time_wait  with --churn, about once per second (see churn.py)
With --churn the workers answer each connection's request and close it (churn.serve)
instead of holding it.

On SIGTERM each worker resets every connection it holds (--close abort), as the clients do.
"""

import argparse
import errno
import os
import resource
import select
import signal
import socket
import sys
import time

try:
    from . import churn, common
except ImportError:  # run as a script inside the container
    import churn
    import common

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# The main process gives a worker its turn to accept with it; a worker out of descriptors
# sends it to the main process, which gives the turn to the next one.
TURN_SIGNAL = signal.SIGUSR1
REPORT_EVERY_S = 0.25
# After a failed accept() the connection is still queued and accept() fails again at once:
# pause so that a worker out of descriptors does not spin.
ERROR_PAUSE_S = 0.1
# How long the accepting worker lets connections gather before it takes them (a batch per
# wake-up), when the accept queue holds at least BATCH_QUEUE of them: a millisecond of
# arrivals fills 1,024 slots only above a million connections a second. A shorter queue (a
# point about the backlog) is taken at once.
BATCH_WAIT_S = 0.001
BATCH_QUEUE = 1024


def batch_wait(backlog, somaxconn):
    """serve()'s batch_wait_s for a listener of ``backlog`` (capped at somaxconn)."""
    return BATCH_WAIT_S if min(backlog, somaxconn) >= BATCH_QUEUE else 0.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=lambda t: [int(v) for v in t.split(",") if v.strip()],
                   default=[5000], help="port(s) to listen on, comma-separated")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--backlog", type=int, default=4096)
    p.add_argument("--churn", action="store_true",
                   help="answer and close each connection (clients in churn mode)")
    p.add_argument("--check", action="store_true",
                   help="exit 0 if something listens on --port in this namespace (health check)")
    p.add_argument("--close", choices=common.CLOSE_MODES, default="abort",
                   help="on SIGTERM: abort (RST, nothing lingers in the kernel) or graceful (FIN)")
    return p.parse_args(argv)


def serve(listeners, worker, batch_wait_s=0.0):
    """Accept until SIGTERM; return (held descriptors, first error, failed accept() calls).

    The workers take turns: one accepts, the others wait for TURN_SIGNAL. The accepting
    worker waits in poll() for its listeners, lets connections gather for ``batch_wait_s``
    and accepts every queued one, and while batches keep coming gathers the next without
    polling; once out of descriptors (EMFILE) it holds what it has and tells the main
    process, which gives the turn to the next worker. So one worker is awake at a time and a
    wake-up takes a batch: with every worker asleep in accept() each connection woke one of
    them, a context switch into a cache-cold interpreter per connection that also preempted
    the client (README's benchmarks: bench_ceiling)."""
    held = []
    first_error, accept_errors = None, 0
    reported = 0
    keep, monotonic = held.append, time.monotonic
    wait_s = REPORT_EVERY_S  # pending signals are looked at this often
    while (info := signal.sigtimedwait({TURN_SIGNAL} | STOP_SIGNALS, wait_s)) is None:
        pass  # not this worker's turn yet
    if info.si_signo != TURN_SIGNAL:
        return held, first_error, accept_errors  # stopped before its turn came
    accepting = select.poll()  # poll, unlike epoll, costs no descriptor
    for listener in listeners:
        accepting.register(listener, select.POLLIN)
    drains = [acceptor(listener) for listener in listeners]
    full = False
    last_look = monotonic()
    busy = False  # the last batch took something: more is on its way
    while True:
        # An idle queue: wait in poll() for the next connection. A busy one: no poll, whose
        # wake-up at the first arrival would only start the gathering sleep; one wake-up a
        # batch (each preempts a client process).
        if busy or accepting.poll(wait_s * 1000):
            if batch_wait_s:
                time.sleep(batch_wait_s)
            taken = len(held)
            for drain in drains:
                error = drain(keep)
                if error is None:
                    continue
                first_error = first_error or error
                accept_errors += 1
                full = error.errno == errno.EMFILE
                if full:
                    break
                time.sleep(ERROR_PAUSE_S)  # ENFILE, ENOBUFS...: the connection stays queued
            if full:  # the next worker goes on; this one only waits for the stop signal
                os.kill(os.getppid(), TURN_SIGNAL)
                accepting, drains, full = select.poll(), [], False
            busy = bool(batch_wait_s) and len(held) > taken
        now = monotonic()
        if now - last_look < wait_s:
            continue
        last_look = now
        if STOP_SIGNALS & signal.sigpending():
            break
        if len(held) != reported:
            reported = len(held)
            common.emit("progress", worker=worker, accepted=reported)
    return held, first_error, accept_errors


def acceptor(listener):
    """drain(keep): accept every connection queued on ``listener`` (non-blocking), passing
    each descriptor to ``keep``; returns what stopped it other than an empty queue (EMFILE
    when out of descriptors), an OSError, or None. accept4() through libc where it can (no
    socket object, no peer address to decode; a queue drained in one Python frame), else the
    socket module."""
    libc = common.load_libc()
    if libc is None:
        def drain_socket(keep):
            while True:
                try:
                    keep(listener.accept()[0].detach())
                except (BlockingIOError, InterruptedError):
                    return None
                except OSError as exc:
                    return exc
        return drain_socket
    import ctypes

    accept4, get_errno, os_error = libc.accept4, ctypes.get_errno, common.os_error
    fd, flags = listener.fileno(), socket.SOCK_CLOEXEC  # as the socket module accepts
    empty = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR}

    def drain(keep):
        while True:
            conn = accept4(fd, None, None, flags)
            if conn < 0:
                number = get_errno()
                return None if number in empty else os_error(number)
            keep(conn)
    return drain


def _cpu_s():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def worker_main(listeners, worker, close, churning=False, batch_wait_s=0.0):
    held = []
    if churning:  # churn closes as it goes: it returns a count
        accepted, error, accept_errors = churn.serve(listeners, worker, STOP_SIGNALS,
                                                     REPORT_EVERY_S, close)
    else:
        held, error, accept_errors = serve(listeners, worker, batch_wait_s)
        accepted = len(held)
    number, name, message = common.describe_error(error) if error else (None, None, None)
    # The result first: the count is final, and resetting many thousand connections takes
    # seconds the engine need not wait for to know it.
    common.emit("result", worker=worker, accepted=accepted, errno=number, error=name,
                message=message, accept_errors=accept_errors,
                conntrack=common.conntrack_count(), listen_drops=common.listen_drops(),
                cpu_s=round(_cpu_s(), 6))
    common.close_all(held, close)
    return 0


def give_turn(turns):
    """Send TURN_SIGNAL to the next worker of ``turns`` still alive, if any is left."""
    for pid in turns:
        try:
            os.kill(pid, TURN_SIGNAL)
            return
        except ProcessLookupError:
            continue


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        return 0 if all(common.is_listening(port) for port in args.port) else 1
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, TURN_SIGNAL} | STOP_SIGNALS)
    listeners = []
    for port in args.port:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        listener.listen(args.backlog)
        listener.setblocking(False)
        listeners.append(listener)
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    # ctypes and libc loaded here, inherited by every worker: imported on a worker's first
    # turn (files read through the image's filesystem on a busy host) it stalled the accept
    # queue long enough to overflow it.
    common.load_libc()
    children = []
    for worker in range(1, args.workers + 1):
        pid = os.fork()
        if pid == 0:
            os._exit(worker_main(listeners, worker, args.close, args.churn,
                                 batch_wait(args.backlog, somaxconn)))
        children.append(pid)
    turns = iter([] if args.churn else children)  # churn: every worker accepts at once
    give_turn(turns)
    common.emit("listening", port=args.port[0], ports=args.port, backlog=args.backlog, somaxconn=somaxconn,
                workers=len(children), nofile_soft=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                capabilities=common.capabilities())
    live = set(children)
    wait = churn.TimeWaitSampler("server").wait if args.churn else signal.sigwaitinfo
    while live:
        signo = wait({signal.SIGCHLD, TURN_SIGNAL} | STOP_SIGNALS).si_signo
        if signo == TURN_SIGNAL:  # a worker is out of descriptors
            give_turn(turns)
        elif signo in STOP_SIGNALS:
            common.forward_signal(live, signal.SIGTERM)
        while live:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            live.discard(pid)
            if os.waitstatus_to_exitcode(status) != 0:  # killed, out of memory, a crash
                common.emit("worker_exit", worker=children.index(pid) + 1, pid=pid,
                            code=os.waitstatus_to_exitcode(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
