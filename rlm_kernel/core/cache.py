"""An opt-in response cache: any LM wrapped so that a call it has answered before is answered again for free.

The key covers what decides a reply: the model, the messages, the sampling and provider parameters, and
the base URL of the server (the same model name on two servers is two models; with no api_base, the environment
variables litellm finds the server in). The output cap is not in
the key (under a budget it is the reservation, which moves with what is left) but is kept with the reply:
a whole reply answers any call whose cap it fits, a reply cut at its cap only a call with that same cap.
A cached reply costs nothing in the ledger (no call, no tokens, no dollars) and is marked by
`Usage.cached_calls`, which the trace, the view and the result carry.

Identical calls in flight at once are joined: the first makes the request, the others wait for its reply
(32 identical prompts in one `llm_query_batched`: one request). A call sampled at `temperature` > 0 is a
sample, not a repeat: the key holds its sample number (the n-th identical sampled call of a run), so a run's
32 samples stay 32 distinct replies, and a rerun gets the same 32 back from the cache.
A disk cache is bounded by `cache_max_mb`: past it, the least recently used replies (by the time a hit or a
write last touched them) are removed.

    RLM(..., cache="memory")            this process, every RLM in it
    RLM(..., cache="disk")              $XDG_CACHE_HOME/rlm_kernel/responses (default ~/.cache/...)
    RLM(..., cache="/some/directory")   one JSON file per reply, there

A cached reply is code the engine runs, so a folder another user owns or can write is refused, folders are made
readable by this user only, an entry this user did not write is ignored, and any malformed entry is a miss.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import json
import math
import os
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.ledger import Usage
from rlm_kernel.core.lm import LM, Completion, Messages

KEY_VERSION = 2  # bump when the key's or an entry's fields change, so old entries are never read as new ones
MEMORY_ENTRIES = 10_000


class Store(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, entry: dict[str, Any]) -> None: ...


class MemoryStore:
    """Replies kept in this process (least recently used dropped past `MEMORY_ENTRIES`)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = entry
            while len(self._entries) > MEMORY_ENTRIES:
                self._entries.popitem(last=False)


class DiskStore:
    """One JSON file a reply, written atomically, so concurrent runs and a crash never leave half an entry;
    past `max_bytes`, the least recently used entries go (a hit touches its file) down to 90% of it."""

    def __init__(self, directory: Path, max_bytes: float = math.inf) -> None:
        try:
            _make_private(directory)
            found = os.stat(directory)
        except OSError as exc:
            raise ConfigError(f"cannot use {directory} as a response cache: {exc.strerror or exc}") from None
        # A cached reply is code the engine runs: whoever can change the folder's entries can run code here.
        if found.st_uid != os.geteuid():
            raise ConfigError(
                f"the response cache {directory} is owned by another user (uid {found.st_uid}): "
                "use a folder of your own (cache='disk' makes one)"
            )
        if found.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(
                f"the response cache {directory} is writable by others: chmod go-w {directory}, or use another folder"
            )
        self.directory, self.max_bytes = directory, max_bytes
        self._lock = threading.Lock()
        self._bytes = sum(size for _, size, _ in self._entries())  # other processes add too: re-read when evicting

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            with open(self._path(key), encoding="utf-8") as file:
                if os.fstat(file.fileno()).st_uid != os.geteuid():  # not an entry this user wrote
                    return None
                entry = json.load(file)
                os.utime(file.fileno())  # recently used: the last to be evicted
        except (OSError, ValueError, RecursionError):  # absent, or unreadable: a miss either way
            return None
        return entry if _well_formed(entry) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(entry, file, ensure_ascii=False)
                size = file.tell()
            os.replace(temporary, self._path(key))
        except OSError:
            Path(temporary).unlink(missing_ok=True)  # a full disk loses a cache entry, never a run
            return
        with self._lock:
            self._bytes += size
            if self._bytes > self.max_bytes:
                self._evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        """(last used, size, path) of every entry file."""
        found = []
        with os.scandir(self.directory) as listing:
            for item in listing:
                if item.name.endswith(".json") and not item.name.startswith("."):
                    try:
                        info = item.stat()
                    except OSError:  # removed meanwhile (another process evicting)
                        continue
                    found.append((info.st_mtime, info.st_size, Path(item.path)))
        return found

    def _evict(self) -> None:
        entries = sorted(self._entries())
        self._bytes = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if self._bytes <= 0.9 * self.max_bytes:
                break
            path.unlink(missing_ok=True)
            self._bytes -= size


def _make_private(directory: Path) -> None:
    """Create `directory` and its missing parents readable by this user only."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)


def _well_formed(entry: object) -> bool:
    """Whether a stored entry has every field a hit reads, each of its type: anything else is a miss."""
    if not isinstance(entry, dict) or not isinstance(entry.get("text"), str):
        return False
    usage, cap = entry.get("usage", {}), entry.get("cap")
    if not isinstance(usage, dict) or not (cap is None or (isinstance(cap, int) and not isinstance(cap, bool))):
        return False
    output = usage.get("output_tokens", 0)
    return output is None or (isinstance(output, int) and not isinstance(output, bool))


_memory = MemoryStore()  # shared by every RLM of the process: a notebook makes a new RLM per cell


def default_directory() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlm_kernel" / "responses"


def open_store(where: str, max_mb: float = math.inf) -> Store:
    """The store for the `cache` setting: "memory", "disk" or a directory (bounded at `max_mb` megabytes)."""
    if where == "memory":
        return _memory
    directory = default_directory() if where == "disk" else Path(os.path.expanduser(where))
    return DiskStore(directory, max_mb * 1_000_000)


def cache_key(
    model: str, messages: Messages, params: Mapping[str, Any] | None, base_url: str | None, sample: int | None = None
) -> str:
    base = base_url if base_url is not None else environment_bases()
    fields = {"v": KEY_VERSION, "model": model, "messages": messages, "params": dict(params or {}), "base": base}
    if sample is not None:
        fields["sample"] = sample
    text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def environment_bases() -> dict[str, str]:
    """Where a call with no api_base goes: litellm reads the server from the environment (OPENAI_API_BASE,
    OPENAI_BASE_URL, ANTHROPIC_BASE_URL, ...), read at each call, so these are part of the key (another
    provider's variable changing costs a miss, never a wrong hit)."""
    return {name: value for name, value in sorted(os.environ.items()) if name.endswith(_BASE_VARIABLES)}


_BASE_VARIABLES = ("_API_BASE", "_BASE_URL", "_API_URL", "_ENDPOINT")


def sampled(params: Mapping[str, Any] | None) -> bool:
    """Whether a call draws a sample (temperature above 0): identical calls then have different replies."""
    temperature = (params or {}).get("temperature")
    return isinstance(temperature, (int, float)) and temperature > 0


_answering: contextvars.ContextVar[Claim | None] = contextvars.ContextVar("rlm_cache_claim", default=None)


class Claim:
    """The call that answers a cache key: its reply is stored (with the cap it was actually sent with), and the
    identical calls that wait for it wake when it ends. Used as `with claim:` around the call."""

    def __init__(self, lm: CachedLM, key: str) -> None:
        self.lm, self.key = lm, key
        self.done = asyncio.get_running_loop().create_future()
        self._token: contextvars.Token[Claim | None] | None = None

    def keep(self, completion: Completion, cap: int | None) -> None:
        entry = {"text": completion.text, "model": completion.model, "usage": completion.usage.to_dict(), "cap": cap}
        self.lm.store.put(self.key, entry)

    def __enter__(self) -> Claim:
        self._token = _answering.set(self)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._token is not None:
            _answering.reset(self._token)
        if self.lm.in_flight.get(self.key) is self.done:
            del self.lm.in_flight[self.key]
        if not self.done.done():
            self.done.set_result(None)


class CachedLM:
    """`lm` with a response cache in front; the engine asks `join` before it reserves budget for a call."""

    def __init__(self, lm: LM, store: Store, base_url: str | None) -> None:
        self.inner, self.store, self.base_url = lm, store, base_url
        self.api_base = base_url
        self.in_flight: dict[str, asyncio.Future[None]] = {}  # key -> the end of the call answering it (one loop)

    def estimate_tokens(self, messages: Messages) -> int:
        return self.inner.estimate_tokens(messages)

    def input_window(self, model: str) -> int | None:
        """The inner LM's input window for `model` (the sub-call size guard reads it), None when unknown."""
        window = getattr(self.inner, "input_window", None)
        return window(model) if callable(window) else None

    def can_stream(self, model: str) -> bool:
        """Whether the inner LM streams any call to `model` (the engine ends a reply that passes its cap)."""
        streams = getattr(self.inner, "can_stream", None)
        return bool(streams(model)) if callable(streams) else False

    def price(self, model: str, input_tokens: int, output_tokens: int) -> float | None:
        return self.inner.price(model, input_tokens, output_tokens)

    def _hit(self, key: str, model: str, max_output_tokens: int | None) -> Completion | None:
        """The cached reply to a call whose output may reach `max_output_tokens` (None: no cap), at no cost, or None."""
        entry = self.store.get(key)
        if entry is None or not _fits(entry, max_output_tokens):
            return None
        return Completion(text=entry["text"], usage=Usage(llm_calls=0, cached_calls=1), model=model, seconds=0.0)

    async def join(
        self,
        messages: Messages,
        *,
        model: str,
        params: Mapping[str, Any] | None,
        max_output_tokens: int | None,
        samples: collections.Counter[str],
    ) -> Completion | Claim:
        """The reply this call gets without a request (cached, or an identical call's in flight, waited for), or
        the claim to make the request. `samples` numbers a run's identical sampled calls."""
        key = cache_key(model, messages, params, self.base_url)
        if sampled(params):
            number = samples[key]
            samples[key] += 1
            key = cache_key(model, messages, params, self.base_url, number)
        while True:
            hit = self._hit(key, model, max_output_tokens)
            if hit is not None:
                return hit
            pending = self.in_flight.get(key)
            if pending is None:
                break
            await asyncio.shield(pending)
        claim = Claim(self, key)
        self.in_flight[key] = claim.done
        return claim

    async def acomplete(
        self,
        messages: Messages,
        *,
        model: str,
        max_output_tokens: int | None,
        timeout: float,
        params: Mapping[str, Any] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        completion = await self.inner.acomplete(
            messages, model=model, max_output_tokens=max_output_tokens, timeout=timeout, params=params, on_text=on_text
        )
        claim = _answering.get()
        if claim is not None and claim.lm is self:  # kept with the cap it was sent with (a reservation's)
            claim.keep(completion, max_output_tokens)
        else:
            entry = {"text": completion.text, "model": completion.model, "usage": completion.usage.to_dict()}
            self.store.put(cache_key(model, messages, params, self.base_url), {**entry, "cap": max_output_tokens})
        return completion


def _fits(entry: dict[str, Any], wanted_cap: int | None) -> bool:
    """Whether the reply `entry` holds is the one a call capped at `wanted_cap` would get."""
    cap, output = entry.get("cap"), int((entry.get("usage") or {}).get("output_tokens") or 0)
    if cap is not None and output >= cap:  # cut at its cap: another cap would cut it elsewhere
        return bool(wanted_cap == cap)
    return wanted_cap is None or output <= wanted_cap


def with_cache(lm: LM, where: str | None, base_url: str | None, max_mb: float = math.inf) -> LM:
    """`lm` behind the cache the `cache` setting names (unchanged when it is None); a disk one bounded at `max_mb`."""
    if where is None or isinstance(lm, CachedLM):
        return lm
    return CachedLM(lm, open_store(where, max_mb), base_url)
