"""nfnl.py against the real kernel: the DNAT rules it sends over nf_tables netlink are the rules nft
makes of the same text, as the kernel lists them back; a refused batch changes nothing.

Each test works in scratch `ip` tables of its own (dbxtest_nfnl_<random>), removed by a finalizer;
no traffic is sent (tests/e2e/test_network_e2e.py sends real traffic through published ports)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from devbox.runtime import nfnl, nft

pytestmark = [pytest.mark.root, pytest.mark.network]

RULES = {
    "prerouting": [
        ("0.0.0.0", "udp", 5353, "10.213.7.3", 53, "dbx ctr " + "b" * 64),
        ("192.168.77.1", "tcp", 18443, "10.213.7.4", 443, "dbx ctr c1"),
    ],
    "output": [
        ("127.0.0.1", "tcp", 18080, "10.213.7.2", 80, "dbx ctr a1"),
        ("0.0.0.0", "udp", 5353, "10.213.7.3", 53, "dbx ctr " + "b" * 64),
        ("192.168.77.1", "tcp", 18443, "10.213.7.4", 443, "dbx ctr c1"),
    ],
}


def nft_run(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)


@pytest.fixture
def table() -> Iterator[Callable[[], str]]:
    """Makes scratch tables with devbox's two nat chains (and a filter chain nobody may touch)."""
    made: list[str] = []

    def make() -> str:
        t = f"dbxtest_nfnl_{uuid.uuid4().hex[:8]}"
        made.append(t)
        nft_run(f"""table ip {t} {{
  chain keep {{ type filter hook forward priority filter; policy accept; iifname "dbxtest0" drop; }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
  chain output {{ type nat hook output priority -100; policy accept; }}
}}
""")
        return t

    yield make
    for t in made:
        subprocess.run(["nft", "delete", "table", "ip", t], capture_output=True)
    left = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert not any(t in left for t in made), left


def listing(t: str) -> list[dict[str, object]]:
    """The table's rules as nft's JSON, without what differs between two tables (name, handles)."""
    out = subprocess.run(["nft", "-j", "list", "table", "ip", t], capture_output=True, text=True, check=True).stdout
    rules = []
    for o in json.loads(out)["nftables"]:
        if "rule" in o:
            r = {k: v for k, v in o["rule"].items() if k not in ("table", "handle")}
            rules.append(r)
    return rules


def expressions(t: str) -> list[str]:
    """The kernel's own dump of every rule (nft --debug=netlink), header lines dropped."""
    out = subprocess.run(["nft", "--debug=netlink", "list", "table", "ip", t], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return [ln.strip() for ln in out.splitlines() if ln.startswith("  [") or ln.startswith("  userdata")]


def test_rules_are_those_nft_makes_of_the_same_text(table: Callable[[], str]) -> None:
    by_nft, by_netlink = table(), table()
    script = [f"add rule ip {by_nft} {chain} {nft._rule_text(r)}" for chain, rules in RULES.items() for r in rules]
    nft_run("\n".join(script) + "\n")
    nfnl.replace_chains(by_netlink, RULES)
    assert listing(by_netlink) == listing(by_nft)
    assert len(listing(by_netlink)) == 6
    assert expressions(by_netlink) == expressions(by_nft)
    assert any("fib daddr type" in e for e in expressions(by_netlink))


def test_replacing_empties_the_chains_and_leaves_the_rest(table: Callable[[], str]) -> None:
    t = table()
    nfnl.replace_chains(t, RULES)
    nfnl.replace_chains(t, {"prerouting": [], "output": [RULES["output"][0]]})
    rules = listing(t)
    assert [(r["chain"], r.get("comment")) for r in rules] == [("keep", None), ("output", "dbx ctr a1")]
    nfnl.replace_chains(t, {"prerouting": [], "output": []})
    assert [r["chain"] for r in listing(t)] == ["keep"]


def test_a_refused_batch_changes_nothing(table: Callable[[], str]) -> None:
    """A missing chain is the kernel's ENOENT, and the flush of the chain before it is undone too."""
    t = table()
    nfnl.replace_chains(t, RULES)
    before = listing(t)
    with pytest.raises(OSError) as e:
        nfnl.replace_chains(t, {"output": [], "nosuchchain": [RULES["output"][0]]})
    assert e.value.errno == 2  # ENOENT
    assert listing(t) == before
    with pytest.raises(OSError):
        nfnl.replace_chains(f"dbxtest_nfnl_missing_{os.getpid()}", RULES)
    nfnl.replace_chains(t, {"output": []})  # the next batch, on a fresh socket, is not confused by the failed ones
    nfnl.replace_chains(t, RULES)
    assert listing(t) == before
