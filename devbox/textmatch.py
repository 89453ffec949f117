"""Character-set checks shared by modules that `devbox run` imports, written without `re`.

`import re` costs ~9 ms (enum, functools, collections), a noticeable part of a short `devbox run`.
Each helper names the regex it stands for; tests/unit/test_textmatch.py compares them with it.
Unlike `re.match(r"...$", s)`, none of them accepts a trailing newline.
"""

from __future__ import annotations

DIGITS = "0123456789"
LOWER = "abcdefghijklmnopqrstuvwxyz"
LOWER_ALNUM = frozenset(DIGITS + LOWER)  # [a-z0-9]
ALNUM = frozenset(DIGITS + LOWER + LOWER.upper())  # [A-Za-z0-9]
NAME_CHARS = ALNUM | frozenset("_.-")  # [A-Za-z0-9_.-]
LOWER_HEX = frozenset("0123456789abcdef")  # [0-9a-f]
HEX = frozenset("0123456789abcdefABCDEF")  # [0-9a-fA-F]


def only(s: str, chars: frozenset[str]) -> bool:
    """Is every character of `s` in `chars`? (`[...]*`; True for "")"""
    return set(s) <= chars


def is_ascii_digits(s: str) -> bool:
    r"""`[0-9]+`. (`str.isdigit` alone also takes "²" and "١"; `\d+` is `str.isdecimal`.)"""
    return s.isascii() and s.isdigit()


def is_name(s: str, max_len: int, first: frozenset[str] = ALNUM) -> bool:
    """`[A-Za-z0-9][A-Za-z0-9_.-]{0,max_len-1}`, whole string; the first character is from `first`
    (a subset of NAME_CHARS)."""
    return 0 < len(s) <= max_len and s[0] in first and set(s) <= NAME_CHARS
