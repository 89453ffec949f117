"""A small rtnetlink client on the standard library, for the hot path of attaching a container.

Attaching a container to a network needs six netlink requests (a veth pair with its peer created
straight in the container's netns and enslaved to the bridge, an alias, and inside the netns: lo up,
an address, eth0 up, a default route). pyroute2 does them well, but importing it costs 100-300 ms
on these machines, about half of a whole `devbox run`; these requests cost 3-8 ms. So the hot
path speaks netlink here, with struct and a socket, and pyroute2 stays for the rare work (creating a
bridge, see network._setup_bridge), where its breadth is worth its import.

Message layouts are the kernel's (include/uapi/linux/{netlink,rtnetlink,if_link,veth}.h). Every
request asks for an ACK, and a kernel error comes back as OSError with the kernel's errno, so
callers see "File exists" or "No such device" as the kernel said it.
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py's enums and selectors cost ~3 ms to import
import os
import struct

NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_NEWROUTE = 20, 24
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 1, 3, 10, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_GATEWAY = 5
IFF_UP = 0x1
AF_UNSPEC, AF_INET = 0, socket.AF_INET
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One rtattr (type-length-value), padded to 4 bytes."""
    body = _RTATTR.pack(_RTATTR.size + len(payload), kind) + payload
    return body + b"\0" * (_align(len(body)) - len(body))


def _str(kind: int, s: str) -> bytes:
    return attr(kind, s.encode() + b"\0")


def _u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


def ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFOMSG.pack(AF_UNSPEC, 0, index, flags, change)


def parse_attrs(data: bytes) -> dict[int, bytes]:
    """rtattrs of a message body, by type (the last one wins; nesting flags masked off)."""
    out: dict[int, bytes] = {}
    off = 0
    while off + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, off)
        if length < _RTATTR.size:
            break
        out[kind & 0x3FFF] = data[off + _RTATTR.size : off + length]
        off += _align(length)
    return out


class Netlink:
    """One NETLINK_ROUTE socket, bound in the network namespace of the thread that opened it."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg_type: int, body: bytes, flags: int = 0) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK; return the (type, body) replies before the ACK.
        A kernel error raises OSError(errno)."""
        self.seq += 1
        seq = self.seq
        hdr = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0)
        self.sock.send(hdr + body)
        replies: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, kind, _flags, rseq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise OSError("netlink: malformed reply")
                payload = data[off + _NLMSGHDR.size : off + length]
                off += _align(length)
                if rseq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", payload)
                    if err:
                        raise OSError(-err, os.strerror(-err))
                    return replies  # the ACK
                if kind == NLMSG_DONE:
                    return replies
                replies.append((kind, payload))

    # -- links ------------------------------------------------------------------------------------

    def get_link(self, ifname: str) -> tuple[int, dict[int, bytes]] | None:
        """(index, attributes) of a link, or None if there is no such link."""
        try:
            replies = self.request(RTM_GETLINK, ifinfo() + _str(IFLA_IFNAME, ifname))
        except OSError as e:
            if e.errno in (19, 2):  # ENODEV, ENOENT
                return None
            raise
        for kind, payload in replies:
            if kind == RTM_NEWLINK:
                _fam, _type, index, _flags, _change = _IFINFOMSG.unpack_from(payload)
                return index, parse_attrs(payload[_IFINFOMSG.size :])
        return None

    def index(self, ifname: str) -> int:
        found = self.get_link(ifname)
        if found is None:
            raise OSError(19, f"no link named {ifname}")
        return found[0]

    def mac(self, ifname: str) -> str | None:
        found = self.get_link(ifname)
        if found is None or IFLA_ADDRESS not in found[1]:
            return None
        return ":".join(f"{b:02x}" for b in found[1][IFLA_ADDRESS])

    def add_veth(self, ifname: str, peer: str, peer_netns_fd: int, master: int) -> None:
        """A veth pair: `ifname` here, enslaved to `master` and up; `peer` created in the netns
        behind `peer_netns_fd` (not up: the container side brings it up after its address)."""
        peer_body = ifinfo() + _str(IFLA_IFNAME, peer) + _u32(IFLA_NET_NS_FD, peer_netns_fd)
        info = _str(IFLA_INFO_KIND, "veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
        body = ifinfo(flags=IFF_UP, change=IFF_UP) + _str(IFLA_IFNAME, ifname) + _u32(IFLA_MASTER, master)
        self.request(RTM_NEWLINK, body + attr(IFLA_LINKINFO, info), NLM_F_CREATE | NLM_F_EXCL)

    def set_alias(self, index: int, alias: str) -> None:
        self.request(RTM_SETLINK, ifinfo(index) + _str(IFLA_IFALIAS, alias))

    def set_up(self, index: int) -> None:
        self.request(RTM_SETLINK, ifinfo(index, IFF_UP, IFF_UP))

    def delete_link(self, ifname: str) -> bool:
        """Delete a link by name; False if there was none."""
        try:
            self.request(RTM_DELLINK, ifinfo() + _str(IFLA_IFNAME, ifname))
        except OSError as e:
            if e.errno in (19, 2):
                return False
            raise
        return True

    # -- addresses and routes ---------------------------------------------------------------------

    def add_address(self, index: int, ip: str, prefixlen: int) -> None:
        raw = socket.inet_aton(ip)
        body = _IFADDRMSG.pack(AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        self.request(RTM_NEWADDR, body + attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw), NLM_F_CREATE | NLM_F_EXCL)

    def add_default_route(self, gateway: str) -> None:
        body = _RTMSG.pack(AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
        self.request(RTM_NEWROUTE, body + attr(RTA_GATEWAY, socket.inet_aton(gateway)), NLM_F_CREATE | NLM_F_EXCL)


class in_netns:  # noqa: N801 -- used like the function it was: `with rtnl.in_netns(path) as ns:`
    """A Netlink socket inside the netns at `nspath` (closed when the block ends).

    A netns is a per-thread attribute, and a netlink socket stays bound to the netns it was created
    in: this thread enters the netns, opens the socket and comes straight back. No fork, no helper.
    A class rather than a contextlib.contextmanager: contextlib's import (functools, collections)
    costs ~3 ms of a `devbox run` that imports nothing else needing it."""

    __slots__ = ("nspath", "nl")

    def __init__(self, nspath: str) -> None:
        self.nspath = nspath
        self.nl: Netlink | None = None

    def __enter__(self) -> Netlink:
        from devbox.runtime import linux

        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            target = os.open(self.nspath, os.O_RDONLY | os.O_CLOEXEC)
        except BaseException:
            os.close(own)
            raise
        try:
            linux.setns(target, linux.CLONE_NEWNET)
            try:
                nl = Netlink()
            finally:
                linux.setns(own, linux.CLONE_NEWNET)  # if this fails, nothing here is safe: let it raise
        finally:
            os.close(target)
            os.close(own)
        self.nl = nl
        return nl

    def __exit__(self, *exc: object) -> None:
        nl, self.nl = self.nl, None
        if nl is not None:
            nl.__exit__(*exc)
