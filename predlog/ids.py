"""Prediction ids: time-ordered, tagged with a key so that only this service can issue them.

An id is 32 characters: 12 hex of the issue time in milliseconds (ids sort by time; the feedback
table is partitioned by it), 8 base32hex (`0-9a-v`) of a 40-bit keyed BLAKE2 tag over the model's
name and the rest of the id, and 12 hex random (48 bits; monitoring samples windows by the last
4). An id issued before the tag existed (32 hex: time + 80 random bits) has no valid tag; feedback
accepts it only when the log holds it for that model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Sequence

ID_LENGTH = 32
SHAPE = re.compile(r"[0-9a-f]{12}[0-9a-v]{20}")
"""What any id of ours looks like (new and legacy ids), after `normalise`."""
MAX_FUTURE_S = 60.0
"""How far ahead of this clock an id may be dated (replicas' clocks differ a little)."""


_B32HEX = "0123456789abcdefghijklmnopqrstuv"
_PAIRS = [_B32HEX[i >> 5] + _B32HEX[i & 31] for i in range(1024)]  # 10 bits -> 2 characters


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class IdKeys:
    """The key new ids are tagged with, and the previous keys whose ids are still accepted (a
    rotated key keeps its labels: list the old one as a previous key until retention ends)."""

    def __init__(self, current: str, previous: Sequence[str] = ()) -> None:
        self.current = current
        self.accepted = [_key(current), *(_key(p) for p in previous if p != current)]
        self._macs: dict[tuple[bytes, str], hashlib.blake2b] = {}

    def _mac(self, key: bytes, model: str) -> hashlib.blake2b:
        mac = self._macs.get((key, model))
        if mac is None:
            if len(self._macs) > 10_000:  # model names come from the path: bounded
                self._macs.clear()
            mac = hashlib.blake2b(model.encode() + b"\0", key=key, digest_size=5)
            self._macs[key, model] = mac
        return mac

    def new(self, n: int, model: str) -> list[str]:
        """`n` ids for predictions of `model`, issued now (about 1 us each)."""
        ms = f"{int(time.time() * 1000):012x}"
        rand = os.urandom(6 * n).hex()
        base = self._mac(self.accepted[0], model).copy()
        base.update(ms.encode())
        out = []
        for i in range(n):
            r = rand[12 * i : 12 * i + 12]
            mac = base.copy()
            mac.update(r.encode())
            out.append(ms + _text(mac.digest()) + r)
        return out

    def issued(self, pid: str, model: str) -> bool:
        """`pid` (normalised) carries a tag of `model` under the current or a previous key."""
        if SHAPE.fullmatch(pid) is None:
            return False
        body, tag = (pid[:12] + pid[20:]).encode(), pid[12:20]
        for key in self.accepted:
            mac = self._mac(key, model).copy()
            mac.update(body)
            if hmac.compare_digest(_text(mac.digest()), tag):
                return True
        return False


def _text(tag: bytes) -> str:
    """A 40-bit tag as 8 base32hex characters (by table: 3x faster than base64's)."""
    x, p = int.from_bytes(tag), _PAIRS
    return p[x >> 30] + p[(x >> 20) & 1023] + p[(x >> 10) & 1023] + p[x & 1023]


def normalise(pid: str) -> str:
    """Ids are case-insensitive (hex and base32hex): the lower-case form is the one stored."""
    return pid.lower() if pid.isascii() else pid


def issued_at(pid: str) -> float | None:
    """Unix seconds the id says it was issued, or None when it is not shaped like one of ours."""
    if len(pid) != ID_LENGTH or SHAPE.fullmatch(pid) is None:
        return None
    return int(pid[:12], 16) / 1000.0
