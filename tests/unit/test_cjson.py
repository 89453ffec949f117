"""devbox.cjson: the same results as the stdlib json through `_json`, without importing json/re."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest

from devbox import cjson

REPO = str(Path(__file__).resolve().parents[2])

VALUES: list[object] = [
    None, True, False, 0, 1, -1, 2**63, -(2**64) - 1, 10**100, 1.5, -0.0, 0.1, 1e308, -1e308, 5e-324,
    1e16, 123456789.123, "", "plain", "é ü ß", "日本語", "\U0001f600 \U0010ffff", "\x00\x01\x1f\x7f",
    'quote " backslash \\ slash /', "\t\n\r\b\f", "\ud800", [], {}, [[]], [{}], {"": ""},
    [1, "two", 3.0, None, True, [False, {"x": []}]],
    {"b": 1, "a": 2, "c": {"z": [1, 2, {"y": None}], "a": "é"}},
    {"\U0001f600": "k", "ä": [1e-7, -5], "A": {"B": {"C": {"D": [[[["deep"]]]]}}}},
    {3: "int key", 2.5: "float key", -1: "negative"}, {True: "bool"}, {None: "none"},
    (1, 2, (3,)),
    [float("inf"), float("-inf")],
]  # fmt: skip


@pytest.mark.parametrize("sort_keys", [False, True])
@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_dumps_matches_stdlib(value: object, sort_keys: bool) -> None:
    assert cjson.dumps(value, sort_keys=sort_keys) == json.dumps(value, sort_keys=sort_keys)


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_separators_and_indent_match_stdlib(value: object) -> None:
    compact = (",", ":")
    assert cjson.dumps(value, sort_keys=True, separators=compact) == json.dumps(value, sort_keys=True,
                                                                               separators=compact)  # fmt: skip
    assert cjson.dumps(value, indent=2, sort_keys=True) == json.dumps(value, indent=2, sort_keys=True)


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_loads_matches_stdlib_and_round_trips(value: object) -> None:
    for sort_keys in (False, True):
        text = json.dumps(value, sort_keys=sort_keys)
        mine, theirs = cjson.loads(text), json.loads(text)
        assert repr(mine) == repr(theirs)  # repr: -0.0 vs 0.0 and types (int vs float) count
        assert cjson.loads(text.encode()) == theirs
        assert cjson.dumps(mine, sort_keys=sort_keys) == text


def test_loads_constants_and_numbers() -> None:
    got = cjson.loads("[NaN, Infinity, -Infinity, -0.0, 1E400, 1e-400, 12345678901234567890, -0, 0.5e1]")
    assert math.isnan(got[0]) and got[1] == math.inf and got[2] == -math.inf
    assert repr(got[3:]) == repr(json.loads("[-0.0, 1E400, 1e-400, 12345678901234567890, -0, 0.5e1]"))
    assert type(got[6]) is int and type(got[8]) is float


def test_loads_whitespace() -> None:
    for text in [" 1", "1 ", ' \t\n\r{"a" :\n[ 1 ,2 ] }\r\n\t ', '\n\n"x"\n', "  []  ", "\t\tnull"]:
        assert cjson.loads(text) == json.loads(text)
        assert cjson.loads(text.encode()) == json.loads(text)


def test_loads_bytes_encodings() -> None:
    doc = {"k": "é \U0001f600", "n": [1, 2]}
    text = json.dumps(doc, ensure_ascii=False)
    raws: list[bytes | bytearray] = [text.encode(), bytearray(text.encode()), b"\xef\xbb\xbf" + text.encode(),
                                     text.encode("utf-16"), text.encode("utf-16-le"), text.encode("utf-32")]  # fmt: skip
    for raw in raws:
        assert cjson.loads(raw) == json.loads(raw) == doc
    assert cjson.loads(b"7") == 7 and cjson.loads(b'"\\ud800"') == "\ud800"


def test_load_reads_a_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    p.write_text('{"a": [1, "é"]}\n')
    with open(p, "rb") as f:
        assert cjson.load(f) == {"a": [1, "é"]}
    assert cjson.load(io.StringIO(" [true] ")) == [True]


BAD = ["", " ", "\n\t", "x", "[1 2]", "[1,", "[1,]", "{", '{"a"', '{"a" 1}', '{"a": 1,}', "{1: 2}", '"abc',
       '"\x01"', '"\\x"', '"\\ud8', "tru", "nul", "falsey", "NaNa", "-", "01", "1.", "1e", ".5", "[1] [2]",
       '{"a": 1} x', "1 2", "\ufeff1", "[" * 5 + "]" * 4, "[]]"]  # fmt: skip


def _error(fn, text):  # type: ignore[no-untyped-def]
    try:
        fn(text)
    except json.JSONDecodeError as e:
        return (type(e), str(e), e.pos, e.lineno, e.colno)
    raise AssertionError(f"{text!r} decoded")


@pytest.mark.parametrize("text", BAD, ids=range(len(BAD)))
def test_loads_errors_match_stdlib(text: str) -> None:
    assert _error(cjson.loads, text) == _error(json.loads, text)
    with pytest.raises(ValueError):
        cjson.loads(text)
    if not text.startswith("\ufeff"):  # as bytes, json strips a UTF-8 BOM
        assert _error(cjson.loads, text.encode())[1:] == _error(json.loads, text.encode())[1:]


def test_loads_type_errors() -> None:
    for bad in [None, 1, ["[]"], memoryview(b"1")]:
        with pytest.raises(TypeError) as mine:
            cjson.loads(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError) as theirs:
            json.loads(bad)  # type: ignore[arg-type]
        assert str(mine.value) == str(theirs.value)


def test_dumps_errors_match_stdlib() -> None:
    class Thing:
        pass

    loop: list[object] = []
    loop.append(loop)
    for bad in [{1, 2}, {"a": [1, {2}]}, Thing(), b"bytes", {(1, 2): 3}, loop]:
        for sort_keys in (False, True):
            with pytest.raises((TypeError, ValueError)) as mine:
                cjson.dumps(bad, sort_keys=sort_keys)
            with pytest.raises((TypeError, ValueError)) as theirs:
                json.dumps(bad, sort_keys=sort_keys)
            assert (type(mine.value), str(mine.value)) == (type(theirs.value), str(theirs.value))
    with pytest.raises(TypeError, match="not supported between"):  # keys of mixed types cannot be sorted
        cjson.dumps({"b": 1, 2: 3}, sort_keys=True)
    assert cjson.dumps({"b": 1, 2: 3}) == json.dumps({"b": 1, 2: 3})
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        cjson.dumps({1, 2})
    # a failed dumps leaves nothing behind: the next one with the same objects works
    shared = [1]
    with pytest.raises(TypeError):
        cjson.dumps([shared, {3}])
    assert cjson.dumps([shared, shared]) == "[[1], [1]]"


def _load_copy(monkeypatch: pytest.MonkeyPatch, fake_json: object) -> types.ModuleType:
    """A fresh devbox.cjson (under another name) imported while `_json` is `fake_json`."""
    monkeypatch.setitem(sys.modules, "_json", fake_json)
    spec = importlib.util.spec_from_file_location("cjson_copy", cjson.__file__)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bad_signature_json() -> types.ModuleType:
    fake = types.ModuleType("_json")

    def make_scanner(context, extra):  # type: ignore[no-untyped-def]  # a different signature
        raise AssertionError("not reached")

    fake.make_scanner = make_scanner  # type: ignore[attr-defined]
    fake.make_encoder = make_scanner  # type: ignore[attr-defined]
    fake.encode_basestring_ascii = lambda s: s  # type: ignore[attr-defined]
    return fake


@pytest.mark.parametrize("fake", [None, "signature"], ids=["no _json", "other signature"])
def test_fallback_to_stdlib_gives_the_same_results(
    monkeypatch: pytest.MonkeyPatch, fake: str | None
) -> None:
    mod = _load_copy(monkeypatch, None if fake is None else _bad_signature_json())
    assert mod._scan_once is None and mod._c_make_encoder is None
    monkeypatch.undo()  # the stdlib itself keeps using the real _json
    for value in VALUES:
        for sort_keys in (False, True):
            assert mod.dumps(value, sort_keys=sort_keys) == cjson.dumps(value, sort_keys=sort_keys)
            text = json.dumps(value, sort_keys=sort_keys)
            assert repr(mod.loads(text)) == repr(cjson.loads(text))
        assert mod.dumps(value, separators=(",", ":")) == json.dumps(value, separators=(",", ":"))
    for text in BAD:
        assert _error(mod.loads, text) == _error(cjson.loads, text)
    with pytest.raises(TypeError):
        mod.dumps({1})


def test_the_c_path_is_in_use() -> None:
    assert cjson._scan_once is not None and cjson._c_make_encoder is not None


def _fresh(code: str) -> str:
    """Run `code` in `python -S` with only the repo on sys.path (no site, so nothing preloaded)."""
    prog = f"import sys; sys.path.insert(0, {REPO!r}); {code}"
    return subprocess.run(
        [sys.executable, "-S", "-c", prog], capture_output=True, text=True, check=True
    ).stdout


def test_no_json_re_or_enum_imported() -> None:
    out = _fresh("from devbox import cjson; d = cjson.loads(cjson.dumps({'a': [1, 2.5, None, 'é'], 'b': {}}, "
                 "sort_keys=True)); cjson.loads(b' [1] '); assert d == {'a': [1, 2.5, None, 'é'], 'b': {}}, d; "
                 "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")  # fmt: skip
    assert out.strip() == "[]"


@pytest.mark.parametrize("text", ["[1 2]", '"abc', '"\x01"', "", "[1] x"])
def test_errors_in_a_process_that_never_imported_json(text: str) -> None:
    """CPython 3.11's C scanner finds JSONDecodeError in sys.modules only (SystemError otherwise)."""
    out = _fresh(f"from devbox import cjson\ntry: cjson.loads({text!r})\n"
                 "except ValueError as e: print(type(e).__module__, type(e).__name__, e)")  # fmt: skip
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        assert out.strip() == f"json.decoder JSONDecodeError {e}"
