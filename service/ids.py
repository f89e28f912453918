"""Prediction ids: 32 hex characters, time-ordered (48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import os
import time

ID_LENGTH = 32


def new_ids(n: int) -> list[str]:
    ms = f"{int(time.time() * 1000):012x}"
    rand = os.urandom(10 * n).hex()
    return [ms + rand[i * 20 : (i + 1) * 20] for i in range(n)]


def issued_at(pid: str) -> float | None:
    """Unix seconds the id was issued, or None when it is not one of ours."""
    if len(pid) != ID_LENGTH:
        return None
    try:
        int(pid, 16)
    except ValueError:
        return None
    return int(pid[:12], 16) / 1000.0
