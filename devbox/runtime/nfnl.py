"""nf_tables over netlink, for the one rule change on the hot path: rewriting devbox's two DNAT chains.

A container with published ports starting or stopping changes only the `prerouting` and `output`
nat chains of devbox's table (nft.py). Through libnftables that costs ~4.5 ms to load the library
and make its context, plus a fetch of the host's whole rule set into its cache, before the ~0.5 ms
transaction itself; `devbox run -p` pays it twice (start and --rm). Here the same transaction is
built with struct and sent on a NETLINK_NETFILTER socket, the way rtnl.py speaks rtnetlink: one
batch (BEGIN, flush each chain, one NEWRULE per rule, END), applied by the kernel atomically, every
message ACKed. The expressions are exactly those nft 1.0 generates for the rules' text (see
`nft --debug=netlink`; tests/integration/test_nfnl.py compares the kernel's listing of both), so
`nft list ruleset` shows the same rules, comments included.

Only these rule shapes are built (everything else in the table stays with libnftables):
    ip daddr A | fib daddr type local,  tcp|udp dport H,  dnat to C:P,  comment "..."
A kernel error (no such table or chain: ENOENT, ...) raises OSError; nft.apply_ports then applies
the whole table through libnftables instead.

Layouts: include/uapi/linux/netfilter/{nfnetlink,nf_tables}.h. nf_tables attributes carry integers
in network byte order; register values are raw bytes (an address, a port in network order, the
host-order u32 of fib's address type).
"""

from __future__ import annotations

import _socket as socket  # the C module: socket.py's enums and selectors cost ~3 ms to import
import _thread
import os
import struct

from devbox.runtime.rtnl import attr

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    Rule = tuple[str, str, int, str, int, str]  # host_ip, proto, host_port, container_ip, port, comment

NETLINK_NETFILTER = 12
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x400, 0x800
NLA_F_NESTED = 1 << 15
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 16, 17
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NFPROTO_IPV4 = 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 1, 2, 4, 7
NFTA_LIST_ELEM = 1
NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 2
NFTA_DATA_VALUE = 1
NFT_REG_1, NFT_REG_2 = 1, 2
NFTA_PAYLOAD_DREG, NFTA_PAYLOAD_BASE, NFTA_PAYLOAD_OFFSET, NFTA_PAYLOAD_LEN = 1, 2, 3, 4
NFT_PAYLOAD_NETWORK_HEADER, NFT_PAYLOAD_TRANSPORT_HEADER = 1, 2
NFTA_CMP_SREG, NFTA_CMP_OP, NFTA_CMP_DATA = 1, 2, 3
NFT_CMP_EQ = 0
NFTA_META_DREG, NFTA_META_KEY = 1, 2
NFT_META_L4PROTO = 16
NFTA_FIB_DREG, NFTA_FIB_RESULT, NFTA_FIB_FLAGS = 1, 2, 3
NFT_FIB_RESULT_ADDRTYPE, NFTA_FIB_F_DADDR = 3, 1 << 1
RTN_LOCAL = 2
NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA = 1, 2
NFTA_NAT_TYPE, NFTA_NAT_FAMILY, NFTA_NAT_REG_ADDR_MIN, NFTA_NAT_REG_PROTO_MIN, NFTA_NAT_FLAGS = 1, 2, 3, 5, 7
NFT_NAT_DNAT = 1
NF_NAT_RANGE_PROTO_SPECIFIED = 2
NFTNL_UDATA_RULE_COMMENT = 0
PROTOS = {"tcp": 6, "udp": 17}

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big endian: packed by hand)


# ---- attributes and expressions --------------------------------------------------------------------------


def _nest(kind: int, *parts: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(parts))


def _be32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack(">I", v))


def _strz(kind: int, s: str) -> bytes:
    return attr(kind, s.encode() + b"\0")


def _data(kind: int, value: bytes) -> bytes:
    return _nest(kind, attr(NFTA_DATA_VALUE, value))


def _expr(name: str, *attrs: bytes) -> bytes:
    return _nest(NFTA_LIST_ELEM, _strz(NFTA_EXPR_NAME, name), _nest(NFTA_EXPR_DATA, *attrs))


def _payload(base: int, offset: int, length: int) -> bytes:
    return _expr("payload", _be32(NFTA_PAYLOAD_DREG, NFT_REG_1), _be32(NFTA_PAYLOAD_BASE, base),
                 _be32(NFTA_PAYLOAD_OFFSET, offset), _be32(NFTA_PAYLOAD_LEN, length))  # fmt: skip


def _cmp_eq(value: bytes) -> bytes:
    return _expr("cmp", _be32(NFTA_CMP_SREG, NFT_REG_1), _be32(NFTA_CMP_OP, NFT_CMP_EQ), _data(NFTA_CMP_DATA, value))


def _immediate(reg: int, value: bytes) -> bytes:
    return _expr("immediate", _be32(NFTA_IMMEDIATE_DREG, reg), _data(NFTA_IMMEDIATE_DATA, value))


def dnat_expressions(host_ip: str, proto: str, host_port: int, ip: str, port: int) -> bytes:
    """The expressions of `<daddr match> <proto> dport H dnat to C:P` as nft 1.0 builds them; the
    daddr match is `fib daddr type local` for 0.0.0.0, else `ip daddr A`."""
    if host_ip == "0.0.0.0":
        match = _expr("fib", _be32(NFTA_FIB_DREG, NFT_REG_1), _be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
                      _be32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR)) + _cmp_eq(struct.pack("=I", RTN_LOCAL))  # fmt: skip
    else:
        match = _payload(NFT_PAYLOAD_NETWORK_HEADER, 16, 4) + _cmp_eq(socket.inet_aton(host_ip))
    return b"".join((
        match,
        _expr("meta", _be32(NFTA_META_KEY, NFT_META_L4PROTO), _be32(NFTA_META_DREG, NFT_REG_1)),
        _cmp_eq(bytes([PROTOS[proto]])),
        _payload(NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2),
        _cmp_eq(struct.pack(">H", host_port)),
        _immediate(NFT_REG_1, socket.inet_aton(ip)),
        _immediate(NFT_REG_2, struct.pack(">H", port)),
        _expr("nat", _be32(NFTA_NAT_TYPE, NFT_NAT_DNAT), _be32(NFTA_NAT_FAMILY, NFPROTO_IPV4),
              _be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1), _be32(NFTA_NAT_REG_PROTO_MIN, NFT_REG_2),
              _be32(NFTA_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED)),
    ))  # fmt: skip


def _comment(text: str) -> bytes:
    """libnftnl's rule userdata: one TLV (type, length, value with its NUL)."""
    raw = text.encode()[:254] + b"\0"
    return bytes([NFTNL_UDATA_RULE_COMMENT, len(raw)]) + raw


# ---- the batch ---------------------------------------------------------------------------------------------


def _msg(kind: int, flags: int, seq: int, body: bytes, family: int = NFPROTO_IPV4, res_id: int = 0) -> bytes:
    payload = _NFGENMSG.pack(family, 0, socket.htons(res_id)) + body
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, flags, seq, 0) + payload


def batch(table: str, chains: Mapping[str, Iterable[Rule]], seq: int = 1) -> tuple[bytes, list[int]]:
    """The batch that empties each of `chains` (name -> rules) and adds its rules, in order. A rule
    is (host_ip, proto, host_port, container_ip, container_port, comment). Returns the bytes and the
    sequence numbers that must be ACKed."""
    out = [_msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, b"", 0, NFNL_SUBSYS_NFTABLES)]
    acked: list[int] = []
    nft_type = NFNL_SUBSYS_NFTABLES << 8
    for chain, rules in chains.items():
        seq += 1
        out.append(_msg(nft_type | NFT_MSG_DELRULE, NLM_F_REQUEST | NLM_F_ACK, seq,
                        _strz(NFTA_RULE_TABLE, table) + _strz(NFTA_RULE_CHAIN, chain)))  # fmt: skip
        acked.append(seq)
        for host_ip, proto, host_port, ip, port, comment in rules:
            seq += 1
            body = b"".join((
                _strz(NFTA_RULE_TABLE, table),
                _strz(NFTA_RULE_CHAIN, chain),
                _nest(NFTA_RULE_EXPRESSIONS, dnat_expressions(host_ip, proto, host_port, ip, port)),
                attr(NFTA_RULE_USERDATA, _comment(comment)),
            ))  # fmt: skip
            out.append(_msg(nft_type | NFT_MSG_NEWRULE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
                            seq, body))  # fmt: skip
            acked.append(seq)
    seq += 1
    out.append(_msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq, b"", 0, NFNL_SUBSYS_NFTABLES))
    return b"".join(out), acked


# One socket per process, closed only by its exit (as libnftables does with its own). The release of
# a NETLINK_NETFILTER socket makes the kernel finish nf_tables' deferred destruction of deleted rules
# first, which waits an RCU grace period (7-30 ms measured here right after a chain flush): per call
# that would be paid each time; this way once, at exit (see docs/performance.md, "Where the time goes").
_CONN: list[tuple[socket.socket, int]] = []  # [(socket, next sequence number)] once opened
_LOCK = _thread.allocate_lock()  # the --rm teardown changes rules from a thread


def replace_chains(table: str, chains: Mapping[str, Iterable[Rule]]) -> None:
    """Make each chain of devbox's `ip` table hold exactly its rules, in one atomic transaction.
    OSError with the kernel's errno when it refuses (the table or a chain missing: ENOENT)."""
    with _LOCK:
        if _CONN:
            sock, seq = _CONN.pop()
        else:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
            sock.settimeout(5.0)  # every message asks for an ACK; never wait forever for a lost one
            sock.bind((0, 0))
            seq = 1
        data, acked = batch(table, chains, seq)
        try:
            sock.send(data)
            pending = set(acked)
            while pending:
                reply = sock.recv(65536)
                off = 0
                while off + _NLMSGHDR.size <= len(reply):
                    length, kind, _flags, rseq, _pid = _NLMSGHDR.unpack_from(reply, off)
                    if length < _NLMSGHDR.size:
                        raise OSError("nf_tables netlink: malformed reply")
                    if kind == NLMSG_ERROR and rseq in pending:
                        (err,) = struct.unpack_from("=i", reply, off + _NLMSGHDR.size)
                        if err:  # the kernel dropped the whole batch
                            raise OSError(-err, f"nf_tables: {os.strerror(-err)}")
                        pending.discard(rseq)
                    off += (length + 3) & ~3
        except OSError:
            sock.close()  # unread replies of a failed batch must not meet the next one
            raise
        _CONN.append((sock, (acked[-1] if acked else seq) + 2))  # past this batch's END
