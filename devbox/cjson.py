"""JSON for the run path through CPython's C accelerator `_json`, without importing `json`.

Why: `devbox run` is a short-lived CLI and `import json` is not cheap. `json.decoder` and
`json.scanner` compile regular expressions at import, which pulls in `re` and through it `enum`
and `functools`. Measured with hyperfine -N (Python 3.11, `python -S -c ...`, 300 runs):

    pass                  9.8 ms
    import _json         10.2 ms   (+0.4 ms)
    import json          21.0 ms   (+11 ms; `-X importtime`: json 12 ms, of it re 8 ms, enum 6 ms)
    import devbox.cjson  +0.6 ms over `import devbox` (`-X importtime`: 0.4 ms + _json 0.2 ms)

Only what nothing else on the run path imports is saved, but `json` was the reason `re` and
`enum` were loaded at all there.

What: the stdlib's own fast path, called directly. `json.loads` and `json.dumps` (without indent)
end up in `_json.make_scanner` and `_json.make_encoder`; this module builds those objects the way
Lib/json/decoder.py, scanner.py and encoder.py do (same context attributes, same arguments) and
adds the little Python glue around them: top-level whitespace, "Extra data", bytes decoding, the
JSONDecodeError messages. Results are the same as the stdlib's for every input, because the
same C code does the work.

`json` is imported lazily only where the C path cannot help: on a decode error (to raise a real
`json.JSONDecodeError`, a ValueError subclass), for `dumps(indent=...)` (the C encoder cannot
indent), for UTF-16/32 bytes, and for everything when `_json` is missing or its functions don't
take the arguments this module was written for (other Python implementations or versions), in
which case `loads`/`dumps` are the stdlib's, transparently.

Note: CPython 3.11's C scanner reports syntax errors by looking `json.decoder` up in sys.modules
without importing it; when `json` was never imported that surfaces as a SystemError, which is
why `loads` retries with the stdlib on SystemError to produce the proper JSONDecodeError.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import IO, Any

__all__ = ["dumps", "load", "loads"]

_WS = " \t\n\r"  # JSON whitespace, as json.decoder.WHITESPACE
_NAN = float("nan")
_INF = float("inf")
_CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": _NAN}


class _Context:
    """What `_json.make_scanner` reads from a json.JSONDecoder (its defaults); memo is for parity
    with the pure-Python scanner, the C one keeps its own."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__

    def __init__(self) -> None:
        self.memo: dict[str, str] = {}


def _default(o: Any) -> Any:
    """json.JSONEncoder.default: called by the encoder for objects it cannot serialise."""
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _c_setup() -> tuple[Any, Any, Any]:
    """(scan_once, make_encoder, encode_basestring_ascii) from `_json`, or Nones if unusable."""
    try:
        from _json import encode_basestring_ascii, make_encoder, make_scanner

        scan = make_scanner(_Context())  # type: ignore[arg-type]  # typeshed: "a JSONDecoder"
        doc = '{"a": [1, -2.5, "x\\u00e9", null, true, false, NaN]} '
        obj, end = scan(doc, 0)
        if end != len(doc) - 1 or obj["a"][:6] != [1, -2.5, "x\u00e9", None, True, False]:
            raise ValueError("unexpected _json.make_scanner result")
        enc = make_encoder({}, _default, encode_basestring_ascii, None, ": ", ", ", True, False, True)
        out = "".join(enc({"b": 1, "a": [1.5, "\u00e9", None, True]}, 0))
        if out != '{"a": [1.5, "\\u00e9", null, true], "b": 1}':
            raise ValueError("unexpected _json.make_encoder result")
    except Exception:  # noqa: BLE001 - ImportError, TypeError (other signature), ValueError: use the stdlib
        return None, None, None
    return scan, make_encoder, encode_basestring_ascii


_scan_once, _c_make_encoder, _c_encode_ascii = _c_setup()


def _decode_error(msg: str, doc: str, pos: int) -> Exception:
    from json import JSONDecodeError

    return JSONDecodeError(msg, doc, pos)


def loads(s: str | bytes | bytearray) -> Any:
    """json.loads(s) with the default decoder."""
    if _scan_once is None:
        import json

        return json.loads(s)
    if isinstance(s, str):
        if s.startswith("\ufeff"):
            raise _decode_error("Unexpected UTF-8 BOM (decode using utf-8-sig)", s, 0)
    elif isinstance(s, (bytes, bytearray)):
        if s[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(s) >= 2 and not (s[0] and s[1])):
            import json  # UTF-16/32 (json.detect_encoding): rare enough to leave to the stdlib

            return json.loads(s)
        s = s.decode("utf-8-sig" if s.startswith(b"\xef\xbb\xbf") else "utf-8", "surrogatepass")
    else:
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {s.__class__.__name__}")
    n = len(s)
    idx = 0
    while idx < n and s[idx] in _WS:
        idx += 1
    try:
        obj, end = _scan_once(s, idx)
    except StopIteration as err:
        raise _decode_error("Expecting value", s, err.value) from None
    except SystemError:
        # The C scanner raises JSONDecodeError through sys.modules["json.decoder"]; without it
        # (json never imported) CPython 3.11 gives a SystemError. The stdlib gives the real error.
        import json

        return json.loads(s)
    while end < n and s[end] in _WS:
        end += 1
    if end != n:
        raise _decode_error("Extra data", s, end)
    return obj


def load(f: IO[Any]) -> Any:
    """json.load(f): loads(f.read())."""
    return loads(f.read())


def dumps(obj: Any, *, sort_keys: bool = False, indent: int | None = None,
          separators: tuple[str, str] | None = None) -> str:  # fmt: skip
    """json.dumps(obj, sort_keys=..., indent=..., separators=...) with the other defaults
    (ensure_ascii, check_circular, allow_nan; TypeError for what JSON cannot represent)."""
    if indent is not None or _c_make_encoder is None:
        import json

        return json.dumps(obj, sort_keys=sort_keys, indent=indent, separators=separators)
    item_sep, key_sep = separators or (", ", ": ")
    if isinstance(obj, str):
        return _c_encode_ascii(obj)  # type: ignore[no-any-return]
    # A new encoder per call, as json.JSONEncoder.iterencode does: its `markers` dict (circular
    # reference check) must start empty, and an error halfway through leaves entries in it.
    enc = _c_make_encoder({}, _default, _c_encode_ascii, None, key_sep, item_sep, sort_keys, False, True)
    return "".join(enc(obj, 0))
