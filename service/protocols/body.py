"""Reading a body: a byte limit checked while it streams; for JSON, the content type and orjson."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import Request
from starlette.requests import ClientDisconnect

from core.digits import whole_number
from service.errors import BadRequest, ClientGone, PayloadTooLarge


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, after the content type and size checks (413 as soon as it is over)."""
    json_type(request.headers.get("content-type", ""))
    return decode_json(await read_bytes(request, limit))


async def read_bytes(request: Request, limit: int) -> bytearray:
    """The raw body, 413 as soon as it is over `limit` bytes."""
    return await collect(request.headers.get("content-length") or "", request.stream(), limit)


def json_type(ctype: str) -> None:
    """A 400 unless the content type is JSON."""
    if not ctype.lower().startswith("application/json"):
        raise BadRequest(f"content-type must be application/json, got {ctype or 'none'!r}")


def decode_json(body: bytes | bytearray) -> Any:
    """The body parsed (a 400 naming the JSON error)."""
    if not body:
        raise BadRequest("empty body; expected a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


async def collect(declared: str, chunks: AsyncIterator[bytes], limit: int) -> bytearray:
    """The body's `chunks` joined, 413 as soon as the declared Content-Length or the bytes
    received are over `limit`; 499 when the client hangs up first."""
    size = whole_number(declared)
    too_long = size is None and declared.isascii() and declared.isdigit()  # past 18 digits
    if too_long or (size is not None and size > limit):
        raise PayloadTooLarge(f"body of {declared[:40]} bytes is over the limit of {limit} bytes")
    body = bytearray()
    try:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before sending its body") from None
    return body
