"""Churn: open a connection, exchange a few bytes, close it, open the next one, at a target
rate or as fast as possible, for a duration. Standard library only (runs in the containers).

Both ends speak on every connection: the client sends one request byte that says who closes
first, the server answers one byte.
  b"c"  the client closes first after the reply (the client's socket keeps TIME_WAIT)
  b"s"  the server closes first after its reply; the client reads EOF, then closes (the
        server's socket keeps TIME_WAIT)

Each process spreads its connections over (source address, server address, server port)
pairs round-robin, starting at pair (proc - 1), its source port chosen as --bind-mode says
(as a hold client does, see tcplimits.fourtuple); unlike a hold client it stops at the first
error, a pool's exhaustion included: a rate that one pair cannot sustain is not sustained.

Lines written (JSON, field "event"):
  churn      per client process, once per second of its loop: second, opened, errors, error,
             connect_latency_s (mean over the second's connections)
  pairs      per client process, before its result: [source, address, port, connections,
             error] per pair (as a hold client writes them)
  time_wait  per container (client or server main process), about once per second: at (wall
             clock, seconds since the epoch), time_wait (sockets in TIME_WAIT in the namespace)
  result     per client process, once: connections, errno, error, message, elapsed_s, cpu_s,
             started_at
"""

import errno
import resource
import select
import signal
import socket
import time

try:
    from . import common
except ImportError:  # run as a script inside the container
    import common

CLOSERS = {"client": b"c", "server": b"s"}
REPLY = b"!"
SAMPLE_S = 1.0


def time_wait_count():
    """Sockets in TIME_WAIT in this network namespace. /proc/net/sockstat's "tw" is kept per
    namespace (tcp_death_row is per netns since Linux 5.19) and costs O(1), where reading
    /proc/net/tcp walks every socket; older kernels fall back to that walk."""
    try:
        with open("/proc/net/sockstat") as f:
            for line in f:
                if line.startswith("TCP:"):
                    fields = line.split()
                    return int(fields[fields.index("tw") + 1])
    except (OSError, ValueError, IndexError):
        pass
    return sum(1 for _, _, state in common.tcp_sockets() if state == "TIME_WAIT")


def open_close(server_addr, request, timeout, source=None, bind_mode="connect"):
    """One connection: connect (from ``source``, its port chosen as ``bind_mode`` says), send
    the request, read the reply, close in the requested order. Returns the time connect()
    took; raises OSError on any failure (ETIMEDOUT when ``timeout``, a common.timeval, runs
    out; EADDRINUSE from bind() when mode bind finds no free port)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeout)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeout)
        if bind_mode != "connect":
            if bind_mode == "bind-no-port":
                s.setsockopt(socket.IPPROTO_IP, common.IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((source, 0))
        t0 = time.monotonic()
        s.connect(server_addr)
        latency = time.monotonic() - t0
        s.sendall(request)
        if s.recv(1) != REPLY:
            raise ConnectionResetError(errno.ECONNRESET, "no reply from the server")
        if request == CLOSERS["server"]:
            s.recv(1)  # b"": the server closed first
        return latency
    except OSError as exc:
        # a blocking call cut short by SO_SNDTIMEO/SO_RCVTIMEO: the timeout ran out
        if exc.errno in common.TIMED_OUT_ERRNOS:
            raise TimeoutError(errno.ETIMEDOUT, "timed out (client connect timeout)") from None
        raise
    finally:
        s.close()


class Seconds:
    """Per-second counts of one process's loop, emitted as "churn" lines."""

    def __init__(self, client, proc, start):
        self.client, self.proc, self.start = client, proc, start
        self.second, self.opened, self.errors, self.error, self.latency = 0, 0, 0, None, 0.0

    def tick(self, now):
        second = int((now - self.start) // SAMPLE_S)
        while second > self.second:  # also writes the empty seconds of a stalled loop
            self.flush()
            self.second += 1

    def flush(self):
        common.emit("churn", client=self.client, proc=self.proc, second=self.second,
                    opened=self.opened, errors=self.errors, error=self.error,
                    connect_latency_s=(self.latency / self.opened) if self.opened else None)
        self.opened, self.errors, self.error, self.latency = 0, 0, None, 0.0


def churn_loop(pairs, *, client, proc, rate, duration, closer, connect_timeout,
               bind_mode="connect", pairs_per_line=40):
    """Open-exchange-close for ``duration`` seconds at ``rate`` per second (None: as fast as
    possible), round-robin over ``pairs`` ((source or None, address, port): the route picks
    the source of None). Stops at the first error, which is the point's answer. Emits "churn"
    lines, "pairs" lines and one "result" line; returns the number of connections."""
    request = CLOSERS[closer]
    targets = [(source, (addr, port)) for source, addr, port in pairs]
    counts = [0] * len(targets)
    errors = [None] * len(targets)
    sources = [source for source, _, _ in pairs]  # the route's choice, once seen
    turn = (proc - 1) % len(targets)
    timeout = common.timeval(connect_timeout)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    interval = 1.0 / rate if rate else 0.0
    start = time.monotonic()
    started_at = time.time()
    seconds = Seconds(client, proc, start)
    end = start + duration
    done, failure = 0, None
    now = start
    while now < end:
        if interval:
            due = start + done * interval
            if due > now:
                time.sleep(min(due, end) - now)
                now = time.monotonic()
                seconds.tick(now)
                if now >= end:
                    break
        source, target = targets[turn]
        try:
            latency = open_close(target, request, timeout, source, bind_mode)
        except OSError as exc:
            failure = exc
            now = time.monotonic()
            seconds.tick(now)
            seconds.errors += 1
            seconds.error = errors[turn] = common.describe_error(exc)[1]
            break
        counts[turn] += 1
        turn = turn + 1 if turn + 1 < len(targets) else 0
        done += 1
        seconds.opened += 1
        seconds.latency += latency
        now = time.monotonic()
        seconds.tick(now)
    elapsed = min(now, end) - start if failure is None else now - start
    if seconds.opened or seconds.errors or seconds.second * SAMPLE_S < elapsed:
        seconds.flush()  # the last, partial second (a loop that ended on time has none)
    if sources[0] is None and done:  # plain connect(): the route picked this source
        sources = [common.route_source(target[0]) for _, target in targets]
    rows = [[sources[i], addr, port, counts[i], errors[i]]
            for i, (_, addr, port) in enumerate(pairs)]
    for first in range(0, len(rows), pairs_per_line):
        common.emit("pairs", client=client, proc=proc, pairs=rows[first:first + pairs_per_line])
    if failure is None:
        number, name, message = None, "DURATION", f"ran the full {duration:g} s"
    else:
        number, name, message = common.describe_error(failure)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    common.emit("result", client=client, proc=proc, connections=done, errno=number, error=name,
                message=message, elapsed_s=round(elapsed, 6), started_at=started_at,
                cpu_s=round(usage.ru_utime + usage.ru_stime - cpu_start, 6))
    return done


class TimeWaitSampler:
    """A container's main process waits for signals through ``wait``; meanwhile it writes a
    "time_wait" line about once per second (the count is per namespace, not per process)."""

    def __init__(self, role, client=None, every=SAMPLE_S):
        self.role, self.client, self.every = role, client, every
        self.due = time.monotonic()

    def wait(self, sigset):
        while True:
            now = time.monotonic()
            if now >= self.due:
                common.emit("time_wait", role=self.role, client=self.client,
                            at=round(time.time(), 3), time_wait=time_wait_count())
                self.due = max(self.due + self.every, now)
            info = signal.sigtimedwait(sigset, max(0.0, self.due - time.monotonic()))
            if info is not None:
                return info


# --------------------------------------------------------------------------- server side


def serve(listeners, worker, stop_signals, report_every, close="abort"):
    """A churn server worker: accept, read each request, reply, and close first when asked
    (b"s") or after the client's EOF (b"c"). poll() costs no descriptor. On a stop signal the
    connections still open are closed as ``close`` says (common.close_all), like a hold
    server's. Returns (accepted, first error, failed accept() calls)."""
    poller = select.poll()
    by_fd = {listener.fileno(): listener for listener in listeners}
    for lfd in by_fd:
        poller.register(lfd, select.POLLIN)
    conns = {}  # fd -> socket
    accepted, first_error, accept_errors = 0, None, 0
    last_report, reported = 0.0, -1
    while not (stop_signals & signal.sigpending()):
        for fd, _ in poller.poll(report_every * 1000):
            if fd in by_fd:
                while True:
                    try:
                        conn, _ = by_fd[fd].accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        first_error = first_error or exc
                        accept_errors += 1
                        time.sleep(0.1)
                        break
                    accepted += 1
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    poller.register(conn.fileno(), select.POLLIN)
                continue
            conn = conns[fd]
            try:
                data = conn.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                try:
                    conn.send(REPLY)
                except OSError:
                    data = b""
            if not data or CLOSERS["server"] in data:
                poller.unregister(fd)
                del conns[fd]
                conn.close()
        now = time.monotonic()
        if accepted != reported and now - last_report >= report_every:
            reported, last_report = accepted, now
            common.emit("progress", worker=worker, accepted=accepted)
    common.close_all([conn.detach() for conn in conns.values()], close)
    return accepted, first_error, accept_errors

