"""Real servers (issue 21): what nginx, nginx as a TCP proxy and Redis hold as configured, what
stops them, and what their clients see (pure, no I/O).

Measured on this machine (Debian bookworm's nginx 1.22.1 and Redis 7.0.15, see the report's
"Real servers" section and tests/engine/test_servers.py), and read in their sources:

- nginx (HTTP): each worker has ``worker_connections`` slots; its listening sockets (Debian's
  default site listens on 80 and [::]:80) and the channel to the master take one each. nginx
  never stops accepting: once a worker's free slots fall to ``worker_connections // 16`` it
  closes its idle connections (those still waiting for a request are "reusable"), up to
  max(1, min(32, reusable // 8)) at a time, oldest first, and logs, at level warn (below
  Debian's error_log level, so only a warn-level log shows it), "N worker_connections are not
  enough, reusing connections". So a full worker holds between ``top - drained + 1`` and
  ``top`` connections, and the clients see connections accepted and then closed, without a
  message: no SYN ever waits in a full accept queue, no client times out.
- nginx-proxy (stream): a proxied connection takes two slots (the client's and the upstream
  one) and is never reusable: past the slots nginx logs "worker_connections are not enough"
  (alert) and closes the new connection at once. The upstream connections leave from the
  server container's own port pool toward one address and port; when it runs out connect()
  fails with EADDRNOTAVAIL, nginx logs "connect() to ... failed (99: Cannot assign requested
  address) while connecting to upstream" and closes the client's connection: the client saw
  connect() succeed and then a close without a message.
- Redis: ``maxclients`` (10,000 by default) lowered to the descriptor limit minus 32 when the
  limit is lower ("maxclients has been reduced to N to compensate for low ulimit"). Past it
  Redis accepts, writes "-ERR max number of clients reached" and closes; it logs nothing at
  the limit (INFO stats counts rejected_connections).
- Idle timeouts: nginx closes a connection that sends no request after client_header_timeout
  (60 s by default); Redis's ``timeout`` is 0 (never). Clients check what they hold a short
  settle after their last connect(): a run whose connecting phase lasts longer than the
  timeout loses its oldest connections to it.

Connections the server closes still hold the client's port and descriptor (CLOSE_WAIT) until
the client closes them: the clients go on opening until their own limit (ports or
descriptors) and stop with its errno.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Debian's packaged defaults (bookworm): /etc/nginx/nginx.conf and Redis's built-in defaults.
DEBIAN_WORKER_CONNECTIONS = 768
NGINX_DEFAULT_LISTENERS = 2          # the default site: listen 80; listen [::]:80
NGINX_CHANNEL_SLOTS = 1              # each worker's channel to the master process
NGINX_HEADER_TIMEOUT_S = 60          # client_header_timeout's default
NGINX_DRAIN_MAX = 32                 # ngx_drain_connections: at most 32 closed at a time
REDIS_DEFAULT_MAXCLIENTS = 10_000
REDIS_RESERVED_FDS = 32              # CONFIG_MIN_RESERVED_FDS
REDIS_MESSAGE = "-ERR max number of clients reached"
REDIS_REDUCED = "maxclients has been reduced"
# A new namespace's ip_local_port_range: the proxy's upstream pool unless server_port_range.
DEFAULT_PORT_RANGE = "32768-60999"
PROXY_PORT = 5000                    # the stream server's port (and the upstream's)
PORTS = {"nginx": 80, "nginx-proxy": PROXY_PORT, "redis": 6379}

# What bound the held count (besides the clients' own "ports" and "descriptors").
WORKER_CONNECTIONS = "worker_connections"
MAXCLIENTS = "maxclients"
UPSTREAM_PORTS = "upstream_ports"
CLIENTS = "clients"
IDLE_TIMEOUT = "idle_timeout"

# The lines each server logs at its limit (a substring of the line; see realserver.LogKinds).
# Redis logs nothing there (it counts rejected_connections in INFO stats); it logs, at start,
# "maxclients has been reduced to N to compensate for low ulimit" (REDIS_REDUCED).
LIMIT_LOG = {
    WORKER_CONNECTIONS: "worker_connections are not enough",
    UPSTREAM_PORTS: "(99: Cannot assign requested address) while connecting to upstream",
}
RAISE_WITH = {
    WORKER_CONNECTIONS: "raise worker_connections (events block of nginx.conf) or "
                        "worker_processes",
    UPSTREAM_PORTS: "widen the proxy's net.ipv4.ip_local_port_range (server_port_range), or "
                    "give the upstream more addresses or ports (each has a pool of its own)",
    MAXCLIENTS: "raise maxclients (redis.conf), and the server's nofile above maxclients + 32",
    CLIENTS: "the clients' own limit bound first: see the hold model",
    IDLE_TIMEOUT: "raise client_header_timeout (nginx), or have the clients send a request",
}


def nginx_listeners(server: str) -> int:
    """Listening sockets each nginx worker holds: Debian's default site, plus the stream
    server's port for the proxy."""
    return NGINX_DEFAULT_LISTENERS + (1 if server == "nginx-proxy" else 0)


def nginx_http_range(worker_connections: int, listeners: int) -> tuple[int, int]:
    """(fewest, most) idle HTTP connections one full nginx worker holds: it drains its
    reusable connections once its free slots fall to worker_connections // 16."""
    top = max(0, worker_connections - listeners - NGINX_CHANNEL_SLOTS
              - worker_connections // 16)
    drained = max(1, min(NGINX_DRAIN_MAX, top // 8))
    return max(0, top - drained + 1), top


def nginx_proxy_sessions(worker_connections: int, listeners: int) -> int:
    """Proxied connections one nginx worker holds: two slots each, after its listeners and
    channel."""
    return max(0, worker_connections - listeners - NGINX_CHANNEL_SLOTS) // 2


def redis_maxclients(maxclients: int | None, nofile: int) -> int:
    """Redis's maxclients after its own adjustment to the descriptor limit."""
    asked = REDIS_DEFAULT_MAXCLIENTS if maxclients is None else maxclients
    return max(1, min(asked, nofile - REDIS_RESERVED_FDS))


@dataclass(frozen=True)
class ServerPrediction:
    server: str
    low: int                  # fewest connections the clients should hold
    high: int                 # most
    bound: str                # what bounds it: worker_connections, maxclients, upstream_ports, clients
    demand: int               # what the clients can open (their own bound)
    closed: tuple[int, int]   # (fewest, most) connections accepted and then closed by the server
    message: str | None       # what a closing server writes first (Redis), else None
    log: str | None           # the server's log line at the limit (a substring)
    raise_with: str
    terms: dict[str, Any] = field(default_factory=dict)
    why: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def predict_server(server: str, demand: int, *, workers: int,
                   worker_connections: int | None = None, maxclients: int | None = None,
                   server_nofile: int, upstream_pool: int | None = None,
                   settle_s: float = 0.0) -> ServerPrediction:
    """What a real server holds of the ``demand`` its clients can open. ``workers``: nginx's
    worker processes in force (auto = one per CPU); ``upstream_pool``: the proxy's ports
    toward its upstream (its ip_local_port_range's size)."""
    why: list[str] = []
    terms: dict[str, Any] = {}
    message, bound = None, CLIENTS
    if server == "redis":
        cap = redis_maxclients(maxclients, server_nofile)
        terms[MAXCLIENTS] = cap
        if cap < (maxclients or REDIS_DEFAULT_MAXCLIENTS):
            why.append(f"Redis lowered maxclients to nofile {server_nofile:,} - "
                       f"{REDIS_RESERVED_FDS} = {cap:,}")
        low = high = min(demand, cap)
        if demand > cap:
            bound, message = MAXCLIENTS, REDIS_MESSAGE
            why.append(f"Redis holds maxclients = {cap:,}; it accepts the other "
                       f"{demand - cap:,}, writes \"{REDIS_MESSAGE}\" and closes them")
    elif server == "nginx":
        wc = worker_connections or DEBIAN_WORKER_CONNECTIONS
        listeners = nginx_listeners(server)
        fewest, most = nginx_http_range(wc, listeners)
        terms.update(worker_connections=wc, workers=workers, listeners=listeners,
                     per_worker=[fewest, most])
        high = min(demand, workers * most)
        # One worker: exact. Several: the kernel hands connections to workers unevenly, so a
        # worker may drain while another still has room.
        low = min(demand, workers * fewest if demand >= 2 * workers * most else fewest)
        if demand > most:
            bound = WORKER_CONNECTIONS
            why.append(f"each worker has {wc:,} slots less {listeners} listening sockets, its "
                       f"channel and the {wc // 16:,} it keeps free = {most:,}; when full it "
                       f"closes up to {most - fewest + 1:,} idle connections at once, so it "
                       f"holds {fewest:,} to {most:,}; {workers} worker(s)")
    elif server == "nginx-proxy":
        wc = worker_connections or DEBIAN_WORKER_CONNECTIONS
        listeners = nginx_listeners(server)
        per = nginx_proxy_sessions(wc, listeners)
        terms.update(worker_connections=wc, workers=workers, listeners=listeners,
                     per_worker=[per, per], upstream_pool=upstream_pool)
        slots = workers * per
        pool = upstream_pool if upstream_pool is not None else slots
        high = min(demand, slots, pool)
        # A port of the proxy's range may be held by Docker's DNS listener (as for clients).
        low = min(demand, slots, max(0, pool - 1)) if pool < min(demand, slots) else high
        if pool < min(demand, slots):
            bound = UPSTREAM_PORTS
            why.append(f"every proxied connection takes one of the proxy's {pool:,} ports "
                       "toward its one upstream address and port; past them its connect() "
                       "fails with EADDRNOTAVAIL and it closes the client's connection")
        elif slots < demand:
            bound = WORKER_CONNECTIONS
            # several workers fill unevenly; twice their slots in attempts fills them all
            low = high if workers == 1 or demand >= 2 * slots else min(demand, per)
            why.append(f"a proxied connection takes two of a worker's slots: ({wc:,} - "
                       f"{listeners} listening - 1 channel) // 2 = {per:,} per worker, "
                       f"{workers} worker(s)")
    else:
        raise ValueError(f"not a real server: {server}")
    if server == "nginx" and settle_s >= NGINX_HEADER_TIMEOUT_S:
        low = high = 0
        bound = IDLE_TIMEOUT
        why.append(f"the clients checked {settle_s:g} s after their last connect(), past "
                   f"nginx's client_header_timeout ({NGINX_HEADER_TIMEOUT_S} s): nginx had "
                   "closed every connection that sent no request")
    closed = (max(0, demand - high), max(0, demand - low))
    return ServerPrediction(server, low, high, bound, demand, closed, message,
                            LIMIT_LOG.get(bound), RAISE_WITH[bound], terms, why)


def predict_from_facts(server: str, demand: int, *, workers: int,
                       effective: Mapping[str, Any], server_nofile: int,
                       upstream_pool: int | None = None,
                       settle_s: float = 0.0) -> ServerPrediction:
    """predict_server from what the server reported in force (realserver's "effective":
    nginx's worker_connections, Redis's maxclients after its own adjustment)."""
    def number(key: str) -> int | None:
        value = effective.get(key)
        return int(value) if str(value).isdigit() else None

    return predict_server(server, demand, workers=workers,
                          worker_connections=number("worker_connections"),
                          maxclients=number("maxclients"), server_nofile=server_nofile,
                          upstream_pool=upstream_pool if server == "nginx-proxy" else None,
                          settle_s=settle_s)


def limit_line(log: Sequence[Mapping[str, Any]] | None, bound: str) -> Mapping[str, Any] | None:
    """The server's own log entry ({line, count}) at the limit ``bound``, if it logged one."""
    wanted = LIMIT_LOG.get(bound)
    if not wanted:
        return None
    return next((e for e in log or () if wanted in str(e.get("line", ""))), None)


@dataclass(frozen=True)
class ServerVerdict:
    """One real-server run against its prediction."""

    held: int
    opened: int
    closed_by_peer: int
    agrees: bool
    explanations: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def judge(pred: ServerPrediction | Mapping[str, Any], held: int, opened: int,
          closed_by_peer: int, peer_message: str | None = None,
          log: Sequence[Mapping[str, Any]] | None = None) -> ServerVerdict:
    """Set a run's held, opened and closed counts against the prediction and explain."""
    p = pred if isinstance(pred, Mapping) else pred.to_dict()
    low, high = int(p["low"]), int(p["high"])
    why = list(p.get("why") or [])
    agrees = low <= held <= high
    if not agrees:
        why.append(f"held {held:,}, outside the predicted {low:,}-{high:,}: not explained by "
                   "the model")
    if opened != int(p["demand"]):
        why.append(f"the clients opened {opened:,}, {opened - int(p['demand']):+,} against "
                   f"their own bound {int(p['demand']):,}")
    if closed_by_peer:
        said = (f"with \"{peer_message.strip()}\"" if peer_message
                else "without a message")
        why.append(f"{closed_by_peer:,} connection(s) were accepted and then closed by the "
                   f"server {said}")
    if p.get("message") and closed_by_peer and (peer_message or "").strip() != p["message"]:
        why.append(f"the server was expected to say \"{p['message']}\"")
    line = limit_line(log, str(p["bound"]))
    if line:
        why.append(f"the server logged \"{line['line']}\" ({int(line.get('count') or 1):,} "
                   "time(s) of that kind)")
    return ServerVerdict(held, opened, closed_by_peer, agrees, why)
