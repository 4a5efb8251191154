"""Helpers shared by the container programs. Standard library only: this file runs inside
the experiment image, next to server.py and client.py."""

import errno
import json
import os
import socket
import struct
import time

# SO_LINGER on with a zero timeout: close() resets the connection (RST) and frees the socket at
# once, instead of a FIN handshake that leaves an orphan or a TIME-WAIT entry in the kernel
# after the container's namespace is gone, slowing the next run's connect().
LINGER_ABORT = struct.pack("ii", 1, 0)
CLOSE_MODES = ("abort", "graceful")

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}


def emit(event, **fields):
    """One JSON line on stdout in a single write(): lines from several processes never
    interleave (a pipe write under PIPE_BUF is atomic)."""
    fields["event"] = event
    os.write(1, (json.dumps(fields, separators=(",", ":")) + "\n").encode())


def describe_error(exc):
    """(errno number, errno name, message) of an exception from socket(), connect() or
    accept(). A timeout set with settimeout() carries no errno: it is reported as
    ETIMEDOUT, which is what the kernel itself would have said, later."""
    if isinstance(exc, socket.timeout) and exc.errno is None:
        return errno.ETIMEDOUT, "ETIMEDOUT", "connect() timed out (client connect timeout)"
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno, errno.errorcode.get(exc.errno, str(exc.errno)), os.strerror(exc.errno)
    return None, type(exc).__name__, str(exc)


def _hex_addr(text):
    host, port = text.split(":")
    if len(host) == 8:  # IPv4, little-endian
        addr = socket.inet_ntop(socket.AF_INET, bytes.fromhex(host)[::-1])
    else:  # IPv6: four little-endian 32-bit words
        raw = b"".join(bytes.fromhex(host[i:i + 8])[::-1] for i in range(0, 32, 8))
        addr = socket.inet_ntop(socket.AF_INET6, raw)
    return addr, int(port, 16)


def tcp_sockets(net_dir="/proc/net"):
    """Every TCP socket of this network namespace (or of the one ``net_dir``, such as
    /proc/<pid>/net, belongs to): (local addr, local port, state)."""
    found = []
    for path in (f"{net_dir}/tcp", f"{net_dir}/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    addr, port = _hex_addr(cols[1])
                    found.append((addr, port, _TCP_STATES.get(cols[3], cols[3])))
        except FileNotFoundError:
            continue
    return found


def conntrack_count():
    """Connections tracked in this network namespace (each namespace counts its own against
    the host's nf_conntrack_max), or None where the table is not there to read."""
    try:
        with open("/proc/sys/net/netfilter/nf_conntrack_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


# A blocking call cut short by SO_SNDTIMEO or SO_RCVTIMEO: connect() returns EINPROGRESS,
# recv() and send() EAGAIN.
TIMED_OUT_ERRNOS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK)


def timeval(seconds):
    """A struct timeval for SO_SNDTIMEO / SO_RCVTIMEO: connect() and recv() on a blocking
    socket give up after it. Cheaper than settimeout(), with which Python runs every call
    non-blocking and adds a poll() (measured: ~10 us more system time per connection)."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1e6))


def connect(sock, address):
    """connect() on a blocking socket bounded by SO_SNDTIMEO (see timeval): a timeout that
    runs out raises ETIMEDOUT, as a timed-out handshake does."""
    try:
        sock.connect(address)
    except OSError as exc:
        if exc.errno in TIMED_OUT_ERRNOS:
            raise TimeoutError(errno.ETIMEDOUT, "timed out (client connect timeout)") from None
        raise


def os_error(number):
    """The OSError Python itself raises for ``number`` (its subclass too: TimeoutError for
    ETIMEDOUT, BlockingIOError for EAGAIN, ...)."""
    return OSError(number, os.strerror(number))


def connect_error(number):
    """connect()'s failure ``number`` as common.connect raises it: SO_SNDTIMEO running out is
    ETIMEDOUT."""
    if number in TIMED_OUT_ERRNOS:
        return TimeoutError(errno.ETIMEDOUT, "timed out (client connect timeout)")
    return os_error(number)


# The hold loops call libc directly (ctypes, standard library): socket(), setsockopt() and
# connect() on the client, accept4() on the server, on raw descriptors, without the socket
# module's objects, address parsing and tuples. Measured (benchmarks/bench_agent_loop.py, one
# client process against one accept worker, 12,500 connections): CPU per connection, client
# C 22.8 us, libc 25.0, socket module 32.4; server C 6.7, libc 7.3, socket module 10.9.
# "socket" in TCPLIMITS_AGENT_SYSCALLS (or no ctypes, no libc) keeps the socket module's path.
SYSCALLS_ENV = "TCPLIMITS_AGENT_SYSCALLS"


_LIBC = []  # loaded once: [libc or None]


def load_libc():
    """libc with errno kept (ctypes.get_errno), or None where ctypes or libc is missing or
    the socket module's path is asked for."""
    if os.environ.get(SYSCALLS_ENV) == "socket":
        return None
    if not _LIBC:
        try:
            import ctypes
            # dlopen(NULL): the interpreter's own symbols, libc's among them; no file to find.
            libc = ctypes.CDLL(None, use_errno=True)
            for name in ("socket", "setsockopt", "getsockopt", "connect", "accept4", "close"):
                getattr(libc, name)
        except (ImportError, OSError, AttributeError):
            libc = None
        _LIBC.append(libc)
    return _LIBC[0]


def sockaddr_in(addr, port):
    """struct sockaddr_in for ``addr``:``port`` (IPv4), as connect() takes it."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr) \
        + bytes(8)


def libc_connector(libc, timeval, sockaddrs):
    """connect_run(live, turn, want, keep, keep_owner): up to ``want`` plain connect()s
    through libc, round-robin over the pairs ``live`` lists (indexes into ``sockaddrs``, each
    a sockaddr_in) from its position ``turn``: socket(), SO_SNDTIMEO and connect() on raw
    descriptors, without the socket module's objects, address parsing and tuples. Each
    connected descriptor goes to ``keep``, its pair to ``keep_owner``. Returns (made, last,
    failure): the connections made, the monotonic time the last of them was (None: none),
    and what stopped the run early (an OSError as common.connect raises it, on the pair at
    position turn + made) or None. A run of connections in one Python frame, everything it
    needs bound here once: a connection is the three C calls and little else (client.py
    runs one per progress sample)."""
    import ctypes

    sock, setsockopt, connect, close = libc.socket, libc.setsockopt, libc.connect, libc.close
    get_errno, monotonic = ctypes.get_errno, time.monotonic
    family, kind = socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_CLOEXEC  # as Python's
    level, option, timeval_len = socket.SOL_SOCKET, socket.SO_SNDTIMEO, len(timeval)
    sockaddr_len = len(sockaddr_in("0.0.0.0", 0))

    def connect_run(live, turn, want, keep, keep_owner):
        count, last = len(live), None
        at = turn % count
        for made in range(want):
            index = live[at]
            fd = sock(family, kind, 0)
            if fd < 0:
                return made, last, os_error(get_errno())  # EMFILE, ENFILE, ENOBUFS
            if setsockopt(fd, level, option, timeval, timeval_len):
                number = get_errno()
                close(fd)
                return made, last, os_error(number)
            if connect(fd, sockaddrs[index], sockaddr_len):
                number = get_errno()
                if number == errno.EINTR:  # a signal arrived: the handshake goes on without us
                    number = _finish_connect(fd, timeval)
                if number:
                    close(fd)
                    return made, last, connect_error(number)
            last = monotonic()
            keep(fd)
            keep_owner(index)
            at += 1
            if at == count:
                at = 0
        return want, last, None
    return connect_run


def _finish_connect(fd, timeval):
    """After EINTR, as Python's socket module does: wait until the handshake is over (up to
    the connect timeout) and take its outcome from SO_ERROR; 0 when connected."""
    import select

    seconds, micros = struct.unpack("ll", timeval)
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not poller.poll((seconds * 1000 + micros // 1000) or None):
        return errno.ETIMEDOUT
    s = socket.socket(fileno=fd)
    try:
        return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        s.detach()


# <linux/in.h>; Python's socket module does not name it.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def route_source(server_addr):
    """The source address the route picks toward the server (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((server_addr, 9))
        return sock.getsockname()[0]


def listen_drops(net_dir="/proc/net"):
    """SYNs this network namespace (or the one ``net_dir``, such as /proc/<pid>/net, belongs
    to) dropped at a listener (TcpExt ListenDrops: a full accept queue among them), or None
    where its netstat cannot be read. A dropped SYN costs its connect() a retransmit, 1 s or
    more."""
    try:
        with open(f"{net_dir}/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                return int(dict(zip(names.split(), values.split()))["ListenDrops"])
    except (OSError, ValueError, KeyError):
        pass
    return None


def is_listening(port):
    return any(p == port and state == "LISTEN" for _, p, state in tcp_sockets())


def forward_signal(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def capabilities():
    """The capability sets of this process (hex, from /proc/self/status): all zero in an
    agent container, which runs with cap_drop ALL as an unprivileged user."""
    caps = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")):
                key, value = line.split(":")
                caps[key] = value.strip()
    return caps


def close_all(fds, mode="abort"):
    """Close held socket descriptors; "abort" resets each connection (see LINGER_ABORT),
    "graceful" is a plain close() (FIN)."""
    libc = load_libc()
    if libc is not None:  # two calls a descriptor, no socket object
        setsockopt, close = libc.setsockopt, libc.close
        abort = mode == "abort"
        for fd in fds:
            if abort:
                setsockopt(fd, socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT, len(LINGER_ABORT))
            close(fd)
        return
    for fd in fds:
        try:
            s = socket.socket(fileno=fd)
        except OSError:  # not a socket any more
            continue
        if mode == "abort":
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            except OSError:
                pass
        s.close()


# tcpi_state, the first byte of struct tcp_info (<linux/tcp.h>): 1 is TCP_ESTABLISHED.
TCP_ESTABLISHED = 1
PEER_MESSAGE_BYTES = 200


def check_held(fds):
    """Which held connections the peer has closed or reset (issue 21: a connection counts as
    held only while it is established). Returns (indexes of the closed ones in ``fds``, the
    first bytes the first closed peer sent before closing, or None). A server that accepts and
    closes (Redis past maxclients, nginx out of worker_connections) leaves the client's socket
    in CLOSE_WAIT (FIN) or CLOSE (RST), its message, if any, unread in the receive buffer."""
    libc = load_libc()
    if libc is None:
        return _check_held_socket(fds)
    import ctypes

    getsockopt, state, size = libc.getsockopt, ctypes.create_string_buffer(1), ctypes.c_uint32()
    size_ref = ctypes.byref(size)
    closed, message = [], None
    for i, fd in enumerate(fds):
        size.value = 1  # tcpi_state only
        if (getsockopt(fd, socket.IPPROTO_TCP, socket.TCP_INFO, state, size_ref) == 0
                and state.raw[0] == TCP_ESTABLISHED):
            continue
        closed.append(i)  # not established, or not a socket any more
        if message is None:
            message = peer_message(fd)
    return closed, message


def peer_message(fd):
    """The first bytes waiting unread on ``fd`` (what a closing server said), or None."""
    try:
        s = socket.socket(fileno=fd)
    except OSError:  # not a socket any more
        return None
    try:
        data = s.recv(PEER_MESSAGE_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except OSError:  # reset, or nothing to read
        data = b""
    finally:
        s.detach()
    return data.decode("utf-8", errors="replace") if data else None


def _check_held_socket(fds):
    """check_held through the socket module."""
    closed, message = [], None
    for i, fd in enumerate(fds):
        try:
            s = socket.socket(fileno=fd)
        except OSError:  # not a socket any more
            closed.append(i)
            continue
        try:
            state = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
            if state == TCP_ESTABLISHED:
                continue
            closed.append(i)
            if message is None:
                message = peer_message(fd)
        except OSError:
            closed.append(i)
        finally:
            s.detach()
    return closed, message
