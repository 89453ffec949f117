"""The plain-string matchers that replaced regexes on the `devbox run` path (`re` costs ~9 ms to import)
agree with the regexes they replaced: each test copies the original regex literal and compares verdicts
and captured groups over edge cases plus thousands of generated strings.

The one intended difference: `re.match("^...$", s)` also matched `s` with one trailing "\n" (`$` matches
before a final newline); the new matchers reject it. `same_anchored` checks that this is the only one.
"""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Callable, Iterator

import pytest

from devbox import textmatch
from devbox.errors import ConfigError
from devbox.runtime import cgroups, network, nft, ports, resources
from devbox.runtime.image import reference, store

N = 3000  # generated strings per matcher
TRICKY = ["\n", " ", "\t", "\x00", "\u3000", "\u2028", "\u0661", "\u00b2", "\uff11", "\u00e9", "\u212a",
          "\u0131", "\u0130", "\u017f", "/", ":", "@", "[", "]", "+", "_", ".", "-", "A", "Z", "a", "z", "0", "9"]  # fmt: skip
NAME_ALPHABET = "aZ09_.-"


def gen(seed: int, alphabet: str, max_len: int, pieces: list[list[str]] | None = None) -> Iterator[str]:
    """Random strings: over `alphabet` (lengths up to max_len + 2, biased to the ends), plus, if given, a
    concatenation of one choice from each of `pieces` (a grammar sketch) with up to two random edits."""
    rng = random.Random(seed)
    chars = list(alphabet) + TRICKY
    for i in range(N):
        if pieces and i % 2:
            s = "".join(rng.choice(p) for p in pieces)
            for _ in range(rng.choice((0, 0, 1, 2))):
                k = rng.randrange(len(s) + 1)
                op = rng.randrange(3)
                if op == 0:
                    s = s[:k] + rng.choice(chars) + s[k:]
                elif op == 1:
                    s = s[:k] + s[k + 1 :]
                else:
                    s = s[:k] + rng.choice(chars) + s[k + 1 :]
            yield s
            continue
        n = rng.choice((0, 1, 2, 3, rng.randrange(max_len + 3), max_len - 1, max_len, max_len + 1))
        pool = alphabet if rng.random() < 0.7 else chars  # mostly valid characters, so some are accepted
        s = "".join(rng.choice(pool) for _ in range(max(n, 0)))
        if rng.random() < 0.1:
            s += "\n"
        yield s


def same_anchored(rx: re.Pattern[str], ok: bool, s: str) -> None:
    """`ok` (the new matcher's verdict on `s`) is what `rx.match(s)` said, except that a trailing "\n"
    is no longer accepted."""
    assert ok == bool(rx.fullmatch(s)), repr(s)
    if ok != bool(rx.match(s)):
        assert s.endswith("\n") and not ok, repr(s)


def edge_names(max_len: int) -> list[str]:
    return ["", "a", "A", "0", "_", ".", "-", "a-", "a.", "a_", "-a", "_a", ".a", "a" * max_len,
            "a" * (max_len + 1), "a" * (max_len - 1) + "-", "a" * (max_len - 1) + "\n", "a\n", "a\nb",
            "\na", " a", "a ", "\u0661", "a\u00b2", "\u00e9", "a/b", "a:b", "A.b_C-9", "a\u212a"]  # fmt: skip


# -- the building blocks ------------------------------------------------------------------------------


def test_unicode_classes_are_the_str_predicates() -> None:
    """`\\d` is str.isdecimal and `\\s` is str.isspace (what str.strip() removes) over all of Unicode."""
    everything = "".join(map(chr, range(sys.maxunicode + 1)))
    assert re.findall(r"\d", everything) == [c for c in everything if c.isdecimal()]
    assert re.findall(r"\s", everything) == [c for c in everything if c.isspace()]
    assert all((c.strip() == "") == c.isspace() for c in everything)
    assert "\u00b2".isdigit() and not "\u00b2".isdecimal()  # why `\d` is not str.isdigit


def test_only_and_ascii_digits() -> None:
    for s in gen(1, "0123456789abcdefABCDEFg", 70):
        assert textmatch.only(s, textmatch.LOWER_HEX) == bool(re.fullmatch(r"[0-9a-f]*", s)), repr(s)
        assert textmatch.is_ascii_digits(s) == bool(re.fullmatch(r"[0-9]+", s)), repr(s)
    for s in ["", "\u00b2", "\u0661", "\uff11", "12\n", "007"]:
        assert textmatch.is_ascii_digits(s) == bool(re.fullmatch(r"[0-9]+", s)), repr(s)


# -- names and ids --------------------------------------------------------------------------------------


def _accepts(fn: Callable[[str], object], s: str, exc: type[Exception]) -> bool:
    try:
        fn(s)
    except exc:
        return False
    return True


def test_container_id() -> None:
    rx = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    for s in [*edge_names(128), *gen(2, NAME_ALPHABET, 128)]:
        ok = cgroups._is_id(s)
        same_anchored(rx, ok, s)
        assert _accepts(cgroups.check_id, s, ValueError) == ok


def test_network_name() -> None:
    rx = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    for s in [*edge_names(64), *network.RESERVED_NAMES, *gen(3, NAME_ALPHABET, 64)]:
        ok = _accepts(network.validate_name, s, ConfigError)
        same_anchored(rx, ok or s in network.RESERVED_NAMES, s)
        assert not (ok and s in network.RESERVED_NAMES)


def test_hostname() -> None:
    rx = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")
    for s in [*edge_names(253), "a-b", "ab", "a.b.", *gen(4, NAME_ALPHABET, 253)]:
        same_anchored(rx, network.is_hostname(s), s)


def test_image_tag() -> None:
    rx = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    for s in [*edge_names(128), *gen(5, NAME_ALPHABET, 128)]:
        same_anchored(rx, reference._is_tag(s), s)


def test_bridge_and_veth_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`re.sub(r"[^a-z0-9_-]", "-", ...)` and `re.sub(r"[^a-z0-9]", "", ...)` as string code."""
    monkeypatch.setattr(network, "_link_exists", lambda n: False)
    for s in [*edge_names(20), "A.Very.Long.Project_Name", "\u0130x", *gen(6, "aZ09_.-", 20)]:
        slug = re.sub(r"[^a-z0-9_-]", "-", s.lower())
        got = network._bridge_name(s, set())
        assert got == "dbx-" + slug if len(slug) <= 11 else got.startswith("dbx-" + slug[:6] + "-"), repr(s)
        clean = re.sub(r"[^a-z0-9]", "", s.lower())
        got = network._veth_name(s, [])
        assert got == "dbx" + clean[:12] if len(clean) >= 4 else got != "dbx" + clean, repr(s)


# -- image references and digests --------------------------------------------------------------------


def test_repository_component() -> None:
    rx = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
    edges = ["a", "a.b", "a_b", "a__b", "a___b", "a-b", "a---b", "a._b", "a-_b", "a..b", "a.", ".a", "A",
             "a\n", "a__", "0", "a.b-c__d---e", "a+b", "a/b", ""]  # fmt: skip
    pieces = [["a", "b0", "x", ""], ["", ".", "_", "__", "___", "-", "--", "._", "-.", "+"], ["a", "9", ""],
              ["", ".", "_", "__", "-", "---"], ["z", ""], ["", "\n"]]  # fmt: skip
    for s in [*edges, *gen(7, "ab09._-", 20, pieces)]:
        same_anchored(rx, reference._is_component(s), s)


def test_reference_digest() -> None:
    rx = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$")
    h = "0123456789abcdefABCDEF0123456789"
    edges = ["sha256:" + h, "sha256:" + h[:31], "sha256+b64u:" + h * 2, "a.b_c-d:" + h, "a..b:" + h,
             ":" + h, "a:" + h + ":", "a:" + h + "g", "sha256:" + h + "\n", "Sha256:" + h, "a+:" + h]  # fmt: skip
    pieces = [["sha256", "a", "x1", "", "A"], ["", "", "+", ".", "_", "-", "+-", ".."], ["b", "b", "", "9"],
              [":", ":", ":", "::", "", ";"], [h, h[:31], h[:32], h + h, h.lower()], ["", "", "", "\n", "g", ":"]]  # fmt: skip
    for s in [*edges, *gen(8, "sha256:+._-0123456789abcdefABCDEF", 80, pieces)]:
        same_anchored(rx, reference._is_digest(s), s)


def test_registry() -> None:
    rx = re.compile(r"^[A-Za-z0-9.-]+(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")
    edges = ["localhost", "localhost:5000", "reg.io:", ":5000", "[::1]", "[::1]:5000", "[]", "[]:1", "[::1",
             "[::1]]", "[::1]:", "[::g]", "a:1:2", "a:\u0661", "a:\u00b2", "a.b-c", "reg.io\n", "[::1]\n",
             "a_b", "a:5000\n"]  # fmt: skip
    pieces = [["", "["], ["localhost", "reg.io", "::1", "fe80::a", "", "a_b", "x-y.z"], ["", "]"],
              ["", ":", ":5000", ":50a", ":\u0661"], ["", "\n", "]", ":1"]]  # fmt: skip
    for s in [*edges, *gen(9, "ab.-:[]09", 24, pieces)]:
        same_anchored(rx, reference.is_registry(s), s)


def test_sha256_digest_and_digest_hex() -> None:
    rx = re.compile(r"^sha256:([0-9a-f]{64})$")
    h = "0123456789abcdef" * 4
    edges = ["sha256:" + h, "sha256:" + h[:-1], "sha256:" + h + "0", "sha256:" + h.upper(), "sha256:" + h + "\n",
             "sha512:" + h, h, "", "sha256:"]  # fmt: skip
    pieces = [["sha256:", "sha256", "sha25:", "SHA256:", ""], [h, h[:63], h + "a", h.upper()], ["", "\n", "g"]]  # fmt: skip
    for s in [*edges, *gen(10, "0123456789abcdefA", 72, pieces)]:
        ok = reference.is_digest(s)
        same_anchored(rx, ok, s)
        if ok:
            assert store.digest_hex(s) == rx.match(s).group(1)  # type: ignore[union-attr]
        else:
            with pytest.raises(Exception, match="bad digest"):
                store.digest_hex(s)


def test_trailing_newline_is_rejected_in_references() -> None:
    d = "sha256:" + "0" * 64
    for bad in ["a\n/b", "nginx:1\n@" + d, "reg.io\n/x", "reg.io:5000\n/x", "x\n@" + d]:
        with pytest.raises(ConfigError):
            reference.parse(bad)
    assert reference.parse("reg.io:5000/x:1@" + d).registry == "reg.io:5000"
    from devbox.cli.registry import _registry_name

    assert _registry_name("https://reg.io:5000/v2/") == "reg.io:5000"
    with pytest.raises(ConfigError):
        _registry_name("reg.io:5000\n")


# -- resources ---------------------------------------------------------------------------------------


def test_memory_split() -> None:
    rx = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
    ws = ["", " ", "\t", "\n", "\u3000", "  \n"]
    pieces = [ws, ["512", "1.5", "1.", ".5", "\u0661\u0662", "\u00b2", "0", "1.5.5", "12a", "", "\uff11.\u0665"],
              ws, ["", "k", "K", "m", "M", "g", "t", "T", "\u212a", "x", "\u017f"],
              ["", "b", "B", "ib", "iB", "IB", "\u0131b", "\u0130b", "i", "bb", "ibb", " b"], ws]  # fmt: skip
    edges = ["", "1", "1 m", "1m b", "1 mib", "512ib", " 1.5GiB\n", "1\n\n", "\u0661m", "1\u212aB", "1.5.5"]
    for s in [*edges, *gen(11, "0123456789.kmgtKMGTiIbB \t", 16, pieces)]:
        m = rx.match(s)
        assert resources._split_memory(s) == (m.groups() if m else None), repr(s)


def test_memory_values_unchanged() -> None:
    assert resources.parse_memory("512m") == 512 * 1024**2
    assert resources.parse_memory(" 1.5GiB ") == 1024**3 * 3 // 2
    assert resources.parse_memory("\u0668m") == 8 * 1024**2  # Unicode digits: as before (float reads them)
    assert resources.parse_memory("8000\u212ab") == 8000 * 1024  # Kelvin sign: IGNORECASE took it as "k"
    with pytest.raises(ConfigError):
        resources.parse_memory("512ib")


def test_whole_number() -> None:
    """_parse_int took `re.fullmatch(r"\\s*\\d+\\s*", value)`."""
    pieces = [["", " ", "\n", "\t\u3000"], ["12", "\u0661", "\u00b2", "", "1 2", "1_000", "+1", "-1", "0"],
              ["", " ", "\n"]]  # fmt: skip
    for s in [*gen(12, "0123456789 \n-+_", 10, pieces)]:
        want = bool(re.fullmatch(r"\s*\d+\s*", s))
        assert _accepts(lambda v: resources._parse_int(v, "--pids", "hint"), s, ConfigError) == want, repr(s)
        if want:
            assert resources._parse_int(s, "--pids", "hint") == int(s)


# -- ports --------------------------------------------------------------------------------------------

SPEC = r"""^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9]*\.[0-9.]*):)?   # optional host address
        (?:(?P<host>\d+):)?                         # optional host port
        (?P<ctr>\d+)                                # container port
        (?:/(?P<proto>[a-zA-Z]+))?$"""


def test_port_spec() -> None:
    rx = re.compile(SPEC, re.VERBOSE)
    pieces = [["", "1.2.3.4:", "0.0.0.0:", ".:", "1.:", "[::1]:", "[1.2.3.4]:", "[]:", "[::1]", "[::g]:",
               "1:", "a.b:", "[::1]x:", "::", "1.2.3.4"],
              ["", "8080:", "\u0661:", ":", "0:", "\u00b2:"],
              ["80", "", "\u00b2", "65535", "\uff18\uff10", "8a", "99999"],
              ["", "/tcp", "/UDP", "/", "/t1", "/tcp/udp", "/\u00e9", "/sctp"], ["", "\n", " "]]  # fmt: skip
    edges = ["80", "8080:80", "0.0.0.0:53:53/udp", "[::1]:80:80", "1:2:3", "80/", "/tcp", ":80", "80:",
             "1.2.3.4:80", "1.2.3.4", "80\n", " 80", "[]:80", "[::1]:80"]  # fmt: skip
    for s in [*edges, *gen(13, "0123456789.:[]/abcfxt", 24, pieces)]:
        m = rx.fullmatch(s)
        got = ports._split_spec(s)
        assert got == ((m["ip"], m["host"], m["ctr"], m["proto"]) if m else None), repr(s)
        t = s.strip()  # as parse_port calls it: then even .match agrees
        m = rx.match(t)
        assert ports._split_spec(t) == ((m["ip"], m["host"], m["ctr"], m["proto"]) if m else None), repr(t)


# -- nft errors ---------------------------------------------------------------------------------------


def test_nft_error_line() -> None:
    rx = re.compile(r"^(?:\S+?:(\d+):[\d-]+: )?Error: (.*)$")
    pieces = [["", "/dev/stdin", "a:b", "x y", "\u3000", "in:put", "f"], [":", ":", ":", ""],
              ["3", "3", "12", "", "\u0663", "a"], [":", ":", ":", ""], ["4-7", "4", "4", "-", "", "\u0664", "x"],
              [":", ":", ":", "", "::"], [" ", " ", " ", "", "  ", "\t"],
              ["Error: ", "Error: ", "Error: ", "Error:", "error: ", "Error:  ", "Warning: "],
              ["", "syntax error, unexpected", " x"], ["", "", "", "\r", " Error: y"]]  # fmt: skip
    edges = ["Error: x", "Error:", "/dev/stdin:3:4-7: Error: bad", "a:b:3:4: Error: m", ":3:4: Error: m",
             "f:3:4:  Error: m", "f:3:4:\tError: m", "f:3::4: Error: m", "f:\u0663:4: Error: m", "Error: "]  # fmt: skip
    valid = [["/dev/stdin", "a:b", "f", "x:1:2"], [":"], ["3", "12", "\u0663"], [":"], ["4-7", "4", "-", "\u0664"],
             [": "], ["Error: "], ["", "syntax error, unexpected", " x", "Error: y"]]  # fmt: skip
    near_misses = gen(15, "/dev:stdin0123-4 Error", 30, valid)  # the valid shape, half with random edits
    for raw in [*edges, *gen(14, "/dev:stdin0123-4 Error", 30, pieces), *near_misses]:
        for line in raw.splitlines() or [raw]:
            m = rx.match(line)
            assert nft._split_error(line) == (m.groups() if m else None), repr(line)


def test_nft_one_line() -> None:
    script = "add table ip t\nadd chain ip t c { bogus }\n"
    assert nft._one_line("/dev/stdin:2:19-23: Error: syntax error\nmore\n", script) == \
        "syntax error in `add chain ip t c { bogus }`"  # fmt: skip
    assert nft._one_line("Error: no such table\n", script) == "no such table"
    assert nft._one_line("/dev/stdin:9:1: Error: far\n", script) == "far"
    assert nft._one_line("something else\n", script) == "something else"
    assert nft._one_line("  \n", script) == "unknown error"
