"""Whole numbers read from text a client sent: ASCII digits only, of a bounded length."""

from __future__ import annotations

MAX_DIGITS = 18  # below 2**63; int() refuses more than 4,300 digits with a ValueError


def whole_number(text: str) -> int | None:
    """`text` as a non-negative int, or None: "²" passes `str.isdigit()` but not int(), and a
    path or header of thousands of digits would make int() raise."""
    if 0 < len(text) <= MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
