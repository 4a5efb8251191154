"""IPv4 addresses of this network namespace over rtnetlink: list them (no privilege needed)
or add some (needs CAP_NET_ADMIN). Standard library only: the image has python3, not `ip`.

The engine runs `netaddr.py add IFACE ADDR/PREFIX ...` in a short-lived helper container that
joins a target container's network namespace with NET_ADMIN as its only capability, so the
agents themselves keep cap_drop ALL. Each address added is printed as a JSON line
({"event": "added", ...}); then every IPv4 address of the namespace ({"event": "addresses"}).
"""

import errno
import json
import os
import socket
import struct
import sys

NETLINK_ROUTE = 0
RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 22, 24
RTA_DST, RTA_GATEWAY = 1, 5
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
IFA_F_SECONDARY = 0x01
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


def _align(n):
    return (n + 3) & ~3


def _attr(kind, payload):
    raw = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _request(sock, kind, flags, body, seq):
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, seq, 0) + body)


def _messages(sock, seq):
    """Yield (type, payload) of the answer to request ``seq`` until DONE or an ACK/error."""
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset < len(data):
            length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
            payload = data[offset + _NLMSGHDR.size:offset + length]
            offset += _align(length)
            if got_seq != seq:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -struct.unpack_from("=i", payload)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                return
            yield kind, payload


def _socket():
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


def addresses():
    """Every IPv4 address of this namespace: [{"iface", "addr", "prefix", "secondary"}]."""
    names = {index: name for index, name in socket.if_nameindex()}
    found = []
    with _socket() as sock:
        _request(sock, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                 _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0), 1)
        for _kind, payload in _messages(sock, 1):
            family, prefix, flags, _scope, index = _IFADDRMSG.unpack_from(payload)
            if family != socket.AF_INET:
                continue
            offset, addr = _IFADDRMSG.size, None
            while offset + _RTATTR.size <= len(payload):
                length, kind = _RTATTR.unpack_from(payload, offset)
                if length < _RTATTR.size:
                    break
                if kind in (IFA_LOCAL, IFA_ADDRESS) and (addr is None or kind == IFA_LOCAL):
                    addr = socket.inet_ntoa(payload[offset + 4:offset + 8])
                offset += _align(length)
            found.append({"iface": names.get(index, str(index)), "addr": addr, "prefix": prefix,
                          "secondary": bool(flags & IFA_F_SECONDARY)})
    return found


def add_address(iface, addr, prefix):
    """Add addr/prefix to iface (CAP_NET_ADMIN). An address already there is an error (EEXIST)."""
    index = socket.if_nametoindex(iface)
    packed = socket.inet_aton(addr)
    body = (_IFADDRMSG.pack(socket.AF_INET, prefix, 0, 0, index)
            + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))
    with _socket() as sock:
        _request(sock, RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, 2)
        for _ in _messages(sock, 2):
            pass


def add_route(dest, prefix, gateway):
    """Route dest/prefix via gateway in the main table (CAP_NET_ADMIN): the clients' way to
    the server's network through the NAT router (topology gateway)."""
    body = (_RTMSG.pack(socket.AF_INET, prefix, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0,
                        RTN_UNICAST, 0)
            + _attr(RTA_DST, socket.inet_aton(dest)) + _attr(RTA_GATEWAY, socket.inet_aton(gateway)))
    with _socket() as sock:
        _request(sock, RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, body, 3)
        for _ in _messages(sock, 3):
            pass


def _emit(event, **fields):
    fields["event"] = event
    sys.stdout.write(json.dumps(fields, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:2] == ["route", "via"] and len(argv) >= 4:
        for spec in argv[3:]:
            dest, _, prefix = spec.partition("/")
            try:
                add_route(dest, int(prefix or 32), argv[2])
            except OSError as exc:
                _emit("error", route=spec, errno=exc.errno,
                      error=errno.errorcode.get(exc.errno, str(exc.errno)),
                      message=os.strerror(exc.errno))
                return 1
            _emit("route_added", dest=spec, via=argv[2])
        return 0
    if not argv or argv[0] not in ("add", "list") or (argv[0] == "add" and len(argv) < 3):
        print("usage: netaddr.py list | netaddr.py add IFACE ADDR/PREFIX [ADDR/PREFIX ...] | "
              "netaddr.py route via GATEWAY DEST/PREFIX [DEST/PREFIX ...]", file=sys.stderr)
        return 2
    if argv[0] == "add":
        iface = argv[1]
        for spec in argv[2:]:
            addr, _, prefix = spec.partition("/")
            try:
                add_address(iface, addr, int(prefix or 32))
            except OSError as exc:
                _emit("error", addr=addr, errno=exc.errno,
                      error=errno.errorcode.get(exc.errno, str(exc.errno)),
                      message=os.strerror(exc.errno))
                return 1
            _emit("added", iface=iface, addr=addr, prefix=int(prefix or 32))
    _emit("addresses", addresses=addresses())
    return 0


if __name__ == "__main__":
    sys.exit(main())
