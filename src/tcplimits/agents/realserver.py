"""Real-server agent (issue 21): run nginx, nginx as a TCP proxy, or Redis from Debian's
packages in the server container, and report what it holds in the server agent's own words.

Runs inside the server image (tcplimits.image.servers) with the standard library only. It
writes the effective configuration (Debian's shipped file plus the overrides asked) to a
tmpfs, starts the server in the foreground, waits until it listens, and then writes JSON
lines as server.py does (field "event"):
  listening    once: port, backlog, somaxconn, workers (the server's processes), nofile_soft,
               capabilities
  server_log   the first line of each kind the server logs (its error log, or its output):
               "768 worker_connections are not enough", "connect() to ... failed (99: ...)"
  progress     every REPORT_EVERY_S while the count changes: worker 0, accepted (the
               namespace's established connections on the port, less the accept queue)
  server_facts once, on SIGTERM: kind, version, package, config (the file it ran with),
               effective settings, listeners, queued, upstream (proxy: established toward the
               upstream), log (each kind of log line with its count)
  result       per server process, on SIGTERM: worker, accepted (established connections on
               the port whose socket that process holds), errno, error, message,
               accept_errors (null: the server's own log says what failed)
The counts come from /proc/net/tcp and each process's /proc/<pid>/fd: the agent runs as the
server's user, in its namespace, with no capability.
"""

import argparse
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

try:
    from . import common
except ImportError:  # run as a script inside the container
    import common

KINDS = ("nginx", "nginx-proxy", "redis")
NGINX_CONF = "/etc/nginx/nginx.conf"
# Debian's error_log logs at level error; nginx says "worker_connections are not enough,
# reusing connections" at warn. A second error_log at warn (the only addition to the shipped
# configuration besides the overrides asked) is the one followed.
NGINX_WARN_LOG = "warn.log"
REDIS_CONF = "/etc/redis/redis.conf"
PACKAGES = {"nginx": "nginx", "nginx-proxy": "nginx", "redis": "redis-server"}
REPORT_EVERY_S = 0.5
LISTEN_TIMEOUT_S = 30
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# A log line's kind: the line without its timestamp, pids, connection numbers and addresses.
_VARIABLE = re.compile(r"^\S+ \S+ |\d+#\d+: |\*\d+ |\d+\.\d+\.\d+\.\d+(:\d+)?|^\d+:[A-Z] ")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=KINDS, required=True)
    p.add_argument("--port", type=int, required=True, help="the port clients connect to")
    p.add_argument("--worker-connections", type=int, help="nginx: events { worker_connections }")
    p.add_argument("--worker-processes", type=int, help="nginx: worker_processes")
    p.add_argument("--maxclients", type=int, help="redis: maxclients")
    p.add_argument("--upstream", help="nginx-proxy: HOST:PORT proxied to")
    p.add_argument("--run-dir", default="/run/tcplimits", help="a writable (tmpfs) directory")
    return p.parse_args(argv)


# -- configuration: Debian's shipped files, overrides on top


def nginx_config(text, *, kind, port, worker_connections=None, worker_processes=None,
                 upstream=None):
    """Debian's nginx.conf with the overrides asked; nginx-proxy adds a stream server on
    ``port`` proxying to ``upstream``. Raises ValueError when a directive to replace is
    missing (the package changed)."""
    def replace(pattern, value, name):
        nonlocal text
        text, n = re.subn(pattern, rf"\g<1>{value};", text, count=1, flags=re.MULTILINE)
        if n != 1:
            raise ValueError(f"{NGINX_CONF} has no {name} directive to set")

    if worker_processes is not None:
        replace(r"^(\s*worker_processes\s+)[^;]*;", worker_processes, "worker_processes")
    if worker_connections is not None:
        replace(r"^(\s*worker_connections\s+)[^;]*;", worker_connections, "worker_connections")
    if kind == "nginx-proxy":
        text += (f"\n# tcplimits: nginx as a TCP proxy\nstream {{\n    server {{\n"
                 f"        listen {port};\n        proxy_pass {upstream};\n    }}\n}}\n")
    return text


def redis_args(conf, maxclients=None):
    """redis-server's command line: Debian's redis.conf, in the foreground, logging to its
    output, answering on every address of the container, saving nothing."""
    args = ["redis-server", conf, "--daemonize", "no", "--supervised", "no", "--logfile", "",
            "--pidfile", "", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir",
            "/var/lib/redis", "--save", ""]
    if maxclients is not None:
        args += ["--maxclients", str(maxclients)]
    return args


def redis_config_get(port, names):
    """CONFIG GET of each name over one RESP connection (before any client connects)."""
    out = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for name in names:
            s.sendall(f"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n${len(name)}\r\n{name}\r\n".encode())
            header = f.readline()
            items = []
            for _ in range(int(header[1:]) if header.startswith(b"*") else 0):
                f.readline()  # $len
                items.append(f.readline().rstrip(b"\r\n").decode())
            out.update(zip(items[::2], items[1::2]))
    return out


# -- what the namespace holds


def tcp_table():
    """(local port, remote port, state, rx_queue, inode) of every TCP socket here."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    c = line.split()
                    rx = int(c[4].split(":")[1], 16)
                    rows.append((int(c[1].rsplit(":", 1)[1], 16), int(c[2].rsplit(":", 1)[1], 16),
                                 c[3], rx, int(c[9])))
        except FileNotFoundError:
            continue
    return rows


def counts(port, upstream_port=None, table=None):
    """(established on port, queued in its accept queues, established toward upstream_port,
    listening sockets of the namespace)."""
    table = tcp_table() if table is None else table
    established = sum(1 for lp, _, st, _, _ in table if lp == port and st == "01")
    queued = sum(rx for lp, _, st, rx, _ in table if lp == port and st == "0A")
    upstream = (sum(1 for _, rp, st, _, _ in table if rp == upstream_port and st == "01")
                if upstream_port else None)
    listeners = sum(1 for _, _, st, _, _ in table if st == "0A")
    return established, queued, upstream, listeners


def socket_inodes(pid):
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                found.add(int(link[8:-1]))
    except OSError:
        pass
    return found


def children(pid):
    """Pids whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return sorted(out)


# -- the server's log


class LogKinds:
    """The first line of each kind, with its count; first lines are emitted as they come."""

    def __init__(self):
        self.first, self.count, self.lock = {}, {}, threading.Lock()

    def take(self, line):
        line = line.rstrip("\n")
        if not line.strip():
            return
        key = _VARIABLE.sub("", line).strip()
        with self.lock:
            if key not in self.first:
                self.first[key] = line
                common.emit("server_log", line=line)
            self.count[key] = self.count.get(key, 0) + 1

    def summary(self):
        with self.lock:
            return [{"line": self.first[k], "count": self.count[k]} for k in self.first]


def follow_pipe(stream, log):
    for raw in iter(stream.readline, b""):
        log.take(raw.decode(errors="replace"))


def follow_file(path, log, stop):
    """Tail ``path`` (created by the server) until ``stop`` is set."""
    f = None
    while not stop.is_set():
        if f is None:
            try:
                f = open(path, errors="replace")
            except OSError:
                stop.wait(0.1)
                continue
        line = f.readline()
        if line:
            log.take(line)
        else:
            stop.wait(0.1)
    if f is not None:
        for line in f:
            log.take(line)


def package_version(name):
    try:
        return subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def server_version(kind):
    cmd = ["redis-server", "--version"] if kind == "redis" else ["nginx", "-v"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout + done.stderr).strip() or None


# -- the run


def start(args, log):
    """Start the server; returns (process, config text, command)."""
    os.makedirs(args.run_dir, exist_ok=True)
    if args.kind == "redis":
        with open(REDIS_CONF) as f:
            config = f.read()
        cmd = redis_args(REDIS_CONF, args.maxclients)
    else:
        with open(NGINX_CONF) as f:
            config = nginx_config(f.read(), kind=args.kind, port=args.port,
                                  worker_connections=args.worker_connections,
                                  worker_processes=args.worker_processes, upstream=args.upstream)
        path = os.path.join(args.run_dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(config)
        warn = os.path.join(args.run_dir, NGINX_WARN_LOG)
        cmd = ["nginx", "-c", path, "-g", f"daemon off; error_log {warn} warn;"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, set()))
    threading.Thread(target=follow_pipe, args=(proc.stdout, log), daemon=True).start()
    return proc, config, cmd


def wait_listening(proc, port):
    end = time.monotonic() + LISTEN_TIMEOUT_S
    while not common.is_listening(port):
        if proc.poll() is not None or time.monotonic() > end:
            return False
        time.sleep(0.05)
    return True


def directive(config, name):
    """The value of the first ``name`` directive in an nginx configuration, or None."""
    match = re.search(rf"^\s*{name}\s+([^;]+);", config, re.MULTILINE)
    return match.group(1).strip() if match else None


def effective(args, proc, config=""):
    """The settings in force, as the server reports them where it can."""
    if args.kind == "redis":
        try:
            return redis_config_get(args.port, ["maxclients", "timeout", "tcp-backlog"])
        except (OSError, ValueError) as exc:
            return {"error": str(exc)}
    workers = children(proc.pid)
    return {"worker_processes": len(workers),
            "worker_processes_directive": directive(config, "worker_processes"),
            "worker_connections": int(directive(config, "worker_connections") or 512),
            "worker_pids": workers}


def main(argv=None):
    args = parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    log = LogKinds()
    stop = threading.Event()
    if args.kind != "redis":
        threading.Thread(target=follow_file,
                         args=(os.path.join(args.run_dir, NGINX_WARN_LOG), log, stop),
                         daemon=True).start()
    proc, config, cmd = start(args, log)
    if not wait_listening(proc, args.port):
        time.sleep(0.5)  # let the log threads take the server's last words
        sys.exit(f"realserver: {args.kind} did not listen on port {args.port} "
                 f"(exit code {proc.poll()}); its log: {log.summary()}")
    time.sleep(0.2)  # nginx forks its workers after listening
    settings = effective(args, proc, config)
    workers = children(proc.pid) if args.kind != "redis" else [proc.pid]
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    upstream_port = int(args.upstream.rsplit(":", 1)[1]) if args.upstream else None
    common.emit("listening", port=args.port, ports=[args.port], somaxconn=somaxconn,
                backlog=int(settings.get("tcp-backlog", 511)), workers=len(workers),
                nofile_soft=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                capabilities=common.capabilities(), server=args.kind)
    reported = None
    while not (STOP_SIGNALS & signal.sigpending()):
        if proc.poll() is not None:
            break
        established, queued, _, _ = counts(args.port)
        if established - queued != reported:
            reported = established - queued
            common.emit("progress", worker=0, accepted=reported)
        time.sleep(REPORT_EVERY_S)
    table = tcp_table()
    established, queued, upstream, listeners = counts(args.port, upstream_port, table)
    per_worker = []
    for pid in workers:
        inodes = socket_inodes(pid)
        per_worker.append(sum(1 for lp, _, st, _, ino in table
                              if lp == args.port and st == "01" and ino in inodes))
    stop.set()
    common.emit("server_facts", kind=args.kind, package=PACKAGES[args.kind],
                package_version=package_version(PACKAGES[args.kind]),
                version=server_version(args.kind), command=cmd, config=config,
                effective=settings, established=established, queued=queued,
                upstream=upstream, listeners=listeners, exit_code=proc.poll(),
                log=log.summary())
    for worker, accepted in enumerate(per_worker, 1):
        common.emit("result", worker=worker, accepted=accepted, errno=None, error=None,
                    message=None, accept_errors=None, conntrack=common.conntrack_count(),
                    listen_drops=common.listen_drops())
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
