"""What crosses between the caller and the isolated worker: length-prefixed frames of JSON, and values as JSON.

Everything that comes from the worker is JSON, never a pickle: model code is untrusted. Plain data (str,
numbers, None, lists, str-keyed dicts) keeps its value; anything else, or anything too large, is described
by its type name, length and (shortened) repr.
"""

from __future__ import annotations

import json
import math
import re
import reprlib
import socket
import struct
from typing import Any

from rlm_kernel.core.capture import truncate
from rlm_kernel.core.errors import RLMError

_HEADER = struct.Struct("!Q")


class FrameTooLarge(RLMError, ValueError):
    """A frame announced more bytes than the receiver accepts."""


def pack(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(pack(payload))


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def frame_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    return int(length)


def recv_frame(sock: socket.socket, limit: float = math.inf) -> bytes:
    length = frame_length(recv_exactly(sock, _HEADER.size))
    if length > limit:
        raise FrameTooLarge(f"a frame of {length:,} bytes is over the limit of {limit:,.0f}")
    return recv_exactly(sock, length)


class FrameReader:
    """Cuts frames out of bytes as they arrive (for the caller's non-blocking read of replies)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.limit:
                raise FrameTooLarge(f"the isolated worker sent a reply of {length:,} bytes")
            if len(self._buffer) < _HEADER.size + length:
                break
            frames.append(bytes(self._buffer[_HEADER.size : _HEADER.size + length]))
            del self._buffer[: _HEADER.size + length]
        return frames


def dumps(value: object) -> bytes:
    return json.dumps(value).encode()  # ASCII: lone surrogates travel as escapes


# -- values ------------------------------------------------------------------------------------------

_short_repr = reprlib.Repr()
_short_repr.maxstring = _short_repr.maxother = 2_000
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxdict = _short_repr.maxset = 50


def plain(value: object, budget: float) -> bool:
    """Whether `value` is JSON data (str, numbers, None, lists, tuples, str-keyed dicts) of about `budget` chars."""
    left = [budget]

    def walk(v: object, depth: int) -> bool:
        if depth > 200:
            return False
        if v is None or isinstance(v, (bool, float)) or (isinstance(v, int) and v.bit_length() < 10_000):
            left[0] -= 8
        elif isinstance(v, str):
            left[0] -= len(v) + 2
        elif isinstance(v, (list, tuple)):
            left[0] -= 2
            if not all(walk(x, depth + 1) for x in v):
                return False
        elif isinstance(v, dict):
            left[0] -= 2
            if not all(isinstance(k, str) and walk(k, depth + 1) and walk(x, depth + 1) for k, x in v.items()):
                return False
        else:
            return False
        return left[0] >= 0

    return walk(value, 0)


def encode(value: object, budget: int | None, *, short: bool = False) -> dict[str, Any]:
    """{"json": value} for plain data within `budget` chars, else {"repr", "type", "len"} describing it."""
    try:
        if plain(value, math.inf if budget is None else budget):
            return {"json": value}
    except (RecursionError, MemoryError):
        pass
    try:
        length: int | None = len(value)  # type: ignore[arg-type]
    except Exception:
        length = None
    try:
        text = _short_repr.repr(value) if short else repr(value)
    except Exception as exc:
        text = f"<{type(value).__name__} object; repr failed: {exc!r}>"
    return {"repr": text if budget is None else truncate(text, budget), "type": type(value).__name__, "len": length}


def decode(data: dict[str, Any], *, standin: bool) -> object:
    if "json" in data:
        return data["json"]
    if not standin:
        return str(data.get("repr"))
    length = data.get("len")
    known = isinstance(length, int) and not isinstance(length, bool) and length >= 0
    return _standin_class(str(data.get("type")))(str(data.get("repr")), length if known else None)


class RemoteValue:
    """Stands for a worker value that was too large, or not JSON data, to bring back: its type name, len and repr."""

    def __init__(self, text: str, length: int | None) -> None:
        self._text, self._length = text, length

    def __repr__(self) -> str:
        return self._text

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(f"object of type '{type(self).__name__}' has no len()")
        return self._length


_standin_classes: dict[str, type[RemoteValue]] = {}


def _standin_class(type_name: str) -> type[RemoteValue]:
    # Named after the worker value's type, so `type(v).__name__` describes it as the engine expects.
    type_name = re.sub(r"\W", "_", type_name)[:100] or "object"  # the name comes from the untrusted worker
    if type_name not in _standin_classes:
        _standin_classes[type_name] = type(type_name, (RemoteValue,), {"__module__": "rlm_kernel.isolation.remote"})
    return _standin_classes[type_name]
