"""nftables rules for devbox networks, applied with the `nft` command in one atomic transaction.

Design: devbox owns one table per state root (`ip devbox` for the default root /var/lib/devbox,
`ip devbox_<hash>` for any other DEVBOX_ROOT, so test roots and the real one never touch each other's
rules). The table is *derived state*: `render()` builds the whole table from the networks' state files
(networks + leases + published ports) and `apply()` replaces it in one `nft -f -` transaction
(`add table; delete table; table {...}`), so the kernel sees the old rule set or the new one, never a
mix, and a crash can never leave half a rule set behind. Reconciling after kill -9 or a reboot is the
same call. Every rule still carries a comment (`dbx net NAME` / `dbx ctr ID`) so a human reading
`nft list ruleset` can tell what it is for.

Why the nft language and not pyroute2's nftables support: pyroute2's nftables API (0.9) is low-level
(expression lists per rule, no parser for the rule language), has no documented transaction batching
helper, and importing it costs as much as the rest of pyroute2. The script is handed to libnftables
(the library behind `nft`, in Debian's libnftables1, which nftables depends on) through ctypes, in
this process: the same parser and the same atomic transaction as `nft -f -` without a fork+exec of
nft (12-20 ms here, most of it nft loading its libraries). When the library cannot be loaded, or
DEVBOX_NFT_COMMAND=1 is set, `nft -f -` is run instead. The context is created once per process and
never freed: nft_ctx_free costs 10-15 ms and the process exits soon anyway.

Rules (B = a network's bridge, S = its subnet, G = its gateway, C:P = a box's address and port):
  prerouting (filter, priority raw): iifname B ip daddr 127.0.0.0/8 drop
      boxes must not reach host services bound to loopback (B has route_localnet=1, see below)
  forward (filter):
      iifname B oifname B accept                        box <-> box on the same network
      iifname B oifname "dbx-*" drop                    network -> any other devbox network
      iifname "dbx-*" oifname B drop                    any other devbox network -> network
      oifname B ct state established,related accept     replies to the boxes' own connections
      oifname B ct status dnat accept                   published ports
      oifname B drop                                    nothing else enters a box from outside
      iifname B accept                                  box -> anything the host reaches
  prerouting (nat, dstnat): published ports bound to 0.0.0.0 or a host address
      fib daddr type local tcp dport H dnat to C:P  /  ip daddr X tcp dport H dnat to C:P
  output (nat): locally generated connections: ip daddr 127.0.0.1 tcp dport H dnat to C:P (etc.)
  postrouting (nat, srcnat):
      oifname B ip saddr 127.0.0.0/8 masquerade         host's localhost -> published port
      oifname B ip saddr S ct status dnat masquerade    hairpin: box -> host:H -> box
      oifname != B ip saddr S masquerade                box -> outside
"""

from __future__ import annotations

import os

from devbox import cjson, fsutil, paths
from devbox.errors import NetworkError
from devbox.log import DEBUG, log

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

FAMILY = "ip"
BRIDGE_GLOB = "dbx-*"


def table_name() -> str:
    root = os.path.realpath(paths.state_root())
    if root == os.fspath(paths.DEFAULT_ROOT):
        return "devbox"
    return "devbox_" + fsutil.sha256_hex(root.encode())[:8]


def _q(s: str) -> str:
    # Names and ids are validated to [A-Za-z0-9_.-]; keep the quoting simple and safe anyway.
    return '"' + s.replace('"', "") + '"'


def _daddr_match(host_ip: str) -> str:
    if host_ip == "0.0.0.0":
        return "fib daddr type local"
    return f"ip daddr {host_ip}"


def _port_entries(networks: Iterable[dict[str, Any]]) -> dict[str, list[tuple[str, str, int, str, int, str]]]:
    """The DNAT rules of the published ports of active leases, by chain ("prerouting", "output"), each
    as (host_ip, proto, host_port, container_ip, container_port, comment). These two nat chains hold
    nothing else, so they can be rewritten alone when only ports change (apply_ports)."""
    chains: dict[str, list[tuple[str, str, int, str, int, str]]] = {"prerouting": [], "output": []}
    for net in sorted(networks, key=lambda n: n["name"]):
        for cid, lease in sorted(net.get("leases", {}).items()):
            if not lease.get("active", True):
                continue
            for p in lease.get("ports", []):
                rule = (p["host_ip"], p["proto"], int(p["host_port"]), lease["ip"], int(p["container_port"]),
                        "dbx ctr " + cid)  # fmt: skip
                chains["output"].append(rule)
                if not p["host_ip"].startswith("127."):
                    chains["prerouting"].append(rule)
    return chains


def _rule_text(rule: tuple[str, str, int, str, int, str]) -> str:
    host_ip, proto, host_port, ip, port, comment = rule
    return f"{_daddr_match(host_ip)} {proto} dport {host_port} dnat to {ip}:{port} comment {_q(comment)}"


def _port_rules(networks: Iterable[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """_port_entries as nft text: (prerouting, output)."""
    chains = _port_entries(networks)
    return [_rule_text(r) for r in chains["prerouting"]], [_rule_text(r) for r in chains["output"]]


def render(networks: Iterable[dict[str, Any]], table: str | None = None) -> list[str]:
    """The lines of the full table for `networks` (each with "bridge", "subnet", "name", "leases")."""
    t = table or table_name()
    pre_f: list[str] = []
    fwd: list[str] = []
    post: list[str] = []
    networks = list(networks)
    for net in sorted(networks, key=lambda n: n["name"]):
        b, s = _q(net["bridge"]), net["subnet"]
        c = f"comment {_q('dbx net ' + net['name'])}"
        pre_f.append(f"iifname {b} ip daddr 127.0.0.0/8 drop {c}")
        fwd += [
            f"iifname {b} oifname {b} accept {c}",
            f"iifname {b} oifname {_q(BRIDGE_GLOB)} drop {c}",
            f"iifname {_q(BRIDGE_GLOB)} oifname {b} drop {c}",
            f"oifname {b} ct state established,related accept {c}",
            f"oifname {b} ct status dnat accept {c}",
            f"oifname {b} drop {c}",
            f"iifname {b} accept {c}",
        ]
        post += [
            f"oifname {b} ip saddr 127.0.0.0/8 masquerade {c}",
            f"oifname {b} ip saddr {s} ct status dnat masquerade {c}",
            f"oifname != {b} ip saddr {s} masquerade {c}",
        ]
    pre_nat, out_nat = _port_rules(networks)
    lines = [
        f"add table {FAMILY} {t}",
        f"delete table {FAMILY} {t}",
        f"table {FAMILY} {t} {{",
        "  chain prerouting_filter {",
        "    type filter hook prerouting priority raw; policy accept;",
        *(f"    {r}" for r in pre_f),
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        *(f"    {r}" for r in fwd),
        "  }",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *(f"    {r}" for r in pre_nat),
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        *(f"    {r}" for r in out_nat),
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *(f"    {r}" for r in post),
        "  }",
        "}",
    ]
    return lines


class _LibNft:
    """libnftables through ctypes: one context, output and errors buffered."""

    def __init__(self) -> None:
        import ctypes

        lib = ctypes.CDLL("libnftables.so.1")
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        self.lib, self.ctx = lib, ctx

    def run(self, script: str) -> str | None:
        """None on success, else nft's error text."""
        rc = self.lib.nft_run_cmd_from_buffer(self.ctx, script.encode())
        err = (self.lib.nft_ctx_get_error_buffer(self.ctx) or b"").decode(errors="replace")
        return None if rc == 0 else (err or f"libnftables returned {rc}")


_LIB: _LibNft | None | bool = None  # None: not tried yet; False: unavailable


def _library() -> _LibNft | None:
    global _LIB
    if _LIB is None:
        if os.environ.get("DEVBOX_NFT_COMMAND") == "1":
            _LIB = False
        else:
            try:
                _LIB = _LibNft()
            except (OSError, AttributeError) as e:
                log.debug("‣ libnftables unavailable (%s): using the nft command", e)
                _LIB = False
    return _LIB or None


def _split_error(line: str) -> tuple[str | None, str] | None:
    r"""The groups (LINE or None, message) of `^(?:\S+?:(\d+):[\d-]+: )?Error: (.*)$` in `line` (one line
    of str.splitlines(), so without "\n"), or None if it does not match. Without `re` (~9 ms to import)."""
    where, space, rest = line.partition(" ")
    if space and rest.startswith("Error: ") and where.endswith(":") and not any(c.isspace() for c in where):
        parts = where[:-1].rsplit(":", 2)  # FILE (may hold ":"), LINE, COL
        if (len(parts) == 3 and parts[0] and parts[1].isdecimal() and parts[2]
                and all(c.isdecimal() or c == "-" for c in parts[2])):  # fmt: skip
            return parts[1], rest[len("Error: ") :]
    if line.startswith("Error: "):
        return None, line[len("Error: ") :]
    return None


def _one_line(err: str, script: str) -> str:
    """nft's first error, with the script line it points at when nft names one (`nft -f -` prints
    `/dev/stdin:LINE:COL: Error: ...`; libnftables reading a buffer names no line)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    m = _split_error(lines[0])
    if m is None:
        return lines[0]
    lineno, message = m
    script_lines = script.splitlines()
    if lineno and 0 < int(lineno) <= len(script_lines):
        return f"{message} in `{script_lines[int(lineno) - 1].strip()}`"
    return message


def run_nft(script: str) -> None:
    log.debug("+ nft -f - <<EOF\n%sEOF", script)
    lib = _library()
    if lib is not None:
        err = lib.run(script)
    else:
        import subprocess

        try:
            r = subprocess.run(["nft", "-f", "-"], check=False, input=script, text=True, capture_output=True)
        except FileNotFoundError:
            raise NetworkError("the nft command is missing", hint="install nftables (apt-get install nftables)") from None
        err = None if r.returncode == 0 else (r.stderr or f"nft exited with {r.returncode}")
    if err is not None:
        raise NetworkError(f"nft failed: {_one_line(err, script)}", hint="run with --debug to see the rule set")


def apply(networks: list[dict[str, Any]]) -> None:
    """Replace devbox's table with the rules for `networks`, atomically; no networks: no table."""
    t = table_name()
    if not networks:
        run_nft(f"add table {FAMILY} {t}\ndelete table {FAMILY} {t}\n")
        return
    run_nft("\n".join(render(networks, t)) + "\n")


def render_ports(networks: Iterable[dict[str, Any]], table: str | None = None) -> list[str]:
    """A transaction that rewrites only the two DNAT chains (see _port_rules)."""
    t = table or table_name()
    pre_nat, out_nat = _port_rules(networks)
    return [
        f"flush chain {FAMILY} {t} prerouting",
        f"flush chain {FAMILY} {t} output",
        *(f"add rule {FAMILY} {t} prerouting {r}" for r in pre_nat),
        *(f"add rule {FAMILY} {t} output {r}" for r in out_nat),
    ]


def apply_ports(networks: list[dict[str, Any]]) -> None:
    """Bring the published-port rules in line with `networks` when nothing else changed (a container
    with -p started or stopped): the two DNAT chains alone, over nf_tables netlink (nfnl.py: ~0.5 ms,
    without loading libnftables, ~4.5 ms, or fetching the host's rule set). When the table or its
    chains are not there (deleted by hand, never made), or DEVBOX_NFT_COMMAND=1 asks for the nft
    command, the whole table is applied."""
    if networks and os.environ.get("DEVBOX_NFT_COMMAND") != "1":
        from devbox.runtime import nfnl

        try:
            if log.isEnabledFor(DEBUG):
                log.debug("+ nf_tables netlink:\n%s", "\n".join(render_ports(networks)))
            nfnl.replace_chains(table_name(), _port_entries(networks))
            return
        except OSError as e:
            log.debug("‣ port rules alone failed (%s): applying the whole table", e)
    apply(networks)


def list_table() -> dict[str, Any] | None:
    """The table as nft's JSON, or None if devbox has none (for inspect and tests)."""
    import subprocess

    r = subprocess.run(["nft", "-j", "list", "table", FAMILY, table_name()], check=False, capture_output=True, text=True)
    if r.returncode != 0:
        return None
    return cjson.loads(r.stdout)  # type: ignore[no-any-return]


def comments() -> list[str]:
    """Comments of every rule in devbox's table."""
    data = list_table()
    if not data:
        return []
    return [o["rule"].get("comment", "") for o in data.get("nftables", []) if "rule" in o]
