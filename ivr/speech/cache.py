"""Synthesized prompts kept as 8 kHz µ-law, in memory and optionally on disk.

Most of what a flow says is fixed text (greetings, menus, reprompts), and every call
would otherwise synthesize it again on the one espeak thread. The cache stores the
final telephony form (8 kHz µ-law, what the player sends), so a hit costs no
synthesis and no resampling.

Keys are sha256 digests of (format version, engine, voice, rate, text): the digest is
a safe file name, and the version changes whenever what we store changes (codec,
resampler quality), so stale files on disk are simply never looked up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import structlog

from ivr.audio.codec import ToUlaw8k
from ivr.errors import InvalidValue
from ivr.speech.base import STAND_IN, Synthesizer

__all__ = ["CacheKey", "CacheStats", "CachedSynthesis", "SynthesisCache"]

log = structlog.get_logger("ivr.speech.cache")

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # ~2.3 hours of 8 kHz µ-law
# Bump when the stored bytes would differ for the same key (codec, resampling quality).
_FORMAT = "ulaw8k-mq-v1"
_SUFFIX = ".ulaw"


@dataclass(frozen=True, slots=True)
class CacheKey:
    engine: str
    voice: str | None
    rate: int | None
    text: str

    @property
    def digest(self) -> str:
        # JSON keeps the fields unambiguous (no separator a text could contain).
        raw = json.dumps([_FORMAT, self.engine, self.voice, self.rate, self.text])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@dataclass(slots=True)
class CacheStats:
    hits: int = 0  # memory and disk hits together
    misses: int = 0
    disk_hits: int = 0
    evictions: int = 0  # from memory; disk entries stay
    bytes: int = 0  # held in memory
    entries: int = 0  # held in memory
    disk_errors: int = 0


class SynthesisCache:
    """An LRU of µ-law prompts bounded in bytes, backed by one file per key when
    `directory` is given (so entries survive restarts and memory evictions)."""

    def __init__(self, directory: Path | None, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise InvalidValue(f"max_bytes must not be negative, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._memory: OrderedDict[str, bytes] = OrderedDict()

    @property
    def hit_rate(self) -> float:
        lookups = self.stats.hits + self.stats.misses
        return self.stats.hits / lookups if lookups else 0.0

    def __len__(self) -> int:
        return len(self._memory)

    def peek(self, key: CacheKey) -> bytes | None:
        """Memory only, without touching the statistics; refreshes the entry's recency."""
        digest = key.digest
        data = self._memory.get(digest)
        if data is not None:
            self._memory.move_to_end(digest)
        return data

    async def get(self, key: CacheKey, *, record: bool = True) -> bytes | None:
        """The µ-law for `key`, from memory or disk, else None.

        `record=False` leaves the statistics alone (prewarming is not call traffic).
        """
        digest = key.digest
        data = self._memory.get(digest)
        if data is not None:
            self._memory.move_to_end(digest)
            if record:
                self.stats.hits += 1
            return data
        if self.directory is not None:
            data = await asyncio.to_thread(self._read, self._path(digest))
            if data is not None:
                self._remember(digest, data)
                if record:
                    self.stats.hits += 1
                    self.stats.disk_hits += 1
                return data
        if record:
            self.stats.misses += 1
        return None

    async def put(self, key: CacheKey, ulaw: bytes) -> None:
        """Store `ulaw`; memory at once (before the first await), then the disk file."""
        digest = key.digest
        self._remember(digest, ulaw)
        if self.directory is not None:
            await asyncio.to_thread(self._write, self._path(digest), ulaw)

    # ------------------------------------------------------------------ memory

    def _remember(self, digest: str, ulaw: bytes) -> None:
        old = self._memory.pop(digest, None)
        if old is not None:
            self.stats.bytes -= len(old)
        if len(ulaw) > self.max_bytes:
            # Larger than the whole budget: keeping it would evict everything else, and
            # it would be evicted by the next put anyway; the disk copy still serves it.
            self._sync_counts()
            return
        self._memory[digest] = ulaw
        self.stats.bytes += len(ulaw)
        while self.stats.bytes > self.max_bytes:
            _, evicted = self._memory.popitem(last=False)
            self.stats.bytes -= len(evicted)
            self.stats.evictions += 1
        self._sync_counts()

    def _sync_counts(self) -> None:
        self.stats.entries = len(self._memory)

    # -------------------------------------------------------------------- disk
    # These run in worker threads (asyncio.to_thread): never on the event loop.

    def _path(self, digest: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{digest}{_SUFFIX}"

    def _read(self, path: Path) -> bytes | None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.stats.disk_errors += 1
            log.warning("synthesis_cache_read_failed", path=str(path), error=str(exc))
            return None
        # Writes are atomic, so an empty file is not ours to trust (or a silent prompt,
        # which costs nothing to synthesize again).
        return data or None

    def _write(self, path: Path, data: bytes) -> None:
        # Temp file in the same directory + os.replace: readers (this process after a
        # restart, or another server sharing the directory) see the old file or the
        # complete new one, never a torn write. fsync before the rename so a power cut
        # cannot leave a renamed but empty file.
        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            # A cache that cannot write (disk full, read-only) must not fail a call.
            self.stats.disk_errors += 1
            log.warning("synthesis_cache_write_failed", path=str(path), error=str(exc))
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


class CachedSynthesis:
    """A synthesizer in front of a `SynthesisCache`, speaking 8 kHz µ-law.

    Concurrent requests for one key synthesize once: the first becomes the producer
    and registers a future; the others wait for it. A producer that is cancelled or
    closed before the end resolves its future with None, and a waiter then takes over
    (a half-synthesized prompt is neither stored nor shared).
    """

    def __init__(self, synthesizer: Synthesizer, cache: SynthesisCache) -> None:
        self.synthesizer = synthesizer
        self.cache = cache
        self.synthesized = 0  # prompts synthesized to completion (and stored)
        self.stood_in = 0  # prompts a stand-in engine spoke (not stored)
        self.shared = 0  # requests served by another request's synthesis
        self._inflight: dict[str, asyncio.Future[bytes | None]] = {}

    def key(self, text: str, voice: str | None, rate: int | None) -> CacheKey:
        return CacheKey(self.synthesizer.name, voice, rate, text)

    async def ulaw(self, text: str, voice: str | None, rate: int | None) -> bytes:
        """All of the prompt's µ-law: cached, shared, or synthesized and stored."""
        return b"".join([chunk async for chunk in self.stream(text, voice, rate)])

    async def prepare(self, text: str, voice: str | None, rate: int | None) -> bool:
        """Make sure the prompt is cached (memory included) without counting a lookup;
        True when it was not cached yet (synthesized now, or by a concurrent request)."""
        key = self.key(text, voice, rate)
        if await self.cache.get(key, record=False) is not None:
            return False
        async for _ in self._stream(key, record=False):
            pass
        return True

    async def stream(
        self, text: str, voice: str | None, rate: int | None
    ) -> AsyncGenerator[bytes, None]:
        """µ-law chunks: the whole prompt at once when cached, else as synthesized (so
        the first frame is not held back by the rest); stored once complete."""
        # aclosing: a consumer that stops early must close the producer now, so waiters
        # are released and nothing partial is stored.
        async with contextlib.aclosing(self._stream(self.key(text, voice, rate), record=True)) as s:
            async for chunk in s:
                yield chunk

    async def _stream(self, key: CacheKey, *, record: bool) -> AsyncGenerator[bytes, None]:
        text, voice, rate = key.text, key.voice, key.rate
        digest = key.digest
        data = await self.cache.get(key, record=record)
        if data is not None:
            yield data
            return
        while (pending := self._inflight.get(digest)) is not None:
            # shield: a waiter that is cancelled must not cancel the producer's future.
            data = await asyncio.shield(pending)
            if data is not None:
                self.shared += 1
                yield data
                return
        # The disk read above awaited; a producer may have finished meanwhile.
        data = self.cache.peek(key)
        if data is not None:
            yield data
            return

        # No await between the checks above and this registration: no second producer.
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        # Nobody may be waiting when synthesis fails; retrieve the exception so asyncio
        # does not log "Future exception was never retrieved".
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._inflight[digest] = future
        parts: list[bytes] = []
        STAND_IN.set(None)
        try:
            # aclosing: when our consumer stops early, the engine stops now too.
            async with contextlib.aclosing(self._synthesize(text, voice, rate)) as chunks:
                async for chunk in chunks:
                    parts.append(chunk)
                    yield chunk
        except BaseException as exc:
            if self._inflight.get(digest) is future:
                del self._inflight[digest]
            if isinstance(exc, Exception):
                future.set_exception(exc)  # waiters fail as this request does
            else:
                future.set_result(None)  # cancelled or closed: a waiter takes over
            raise
        data = b"".join(parts)
        if self._inflight.get(digest) is future:
            del self._inflight[digest]
        future.set_result(data)
        if STAND_IN.get() is not None:
            # A stand-in voice spoke (the remote one failed or was too slow): good for the
            # callers waiting now, never stored as the requested voice.
            self.stood_in += 1
        elif data:
            self.synthesized += 1
            # put() fills memory before its first await, so there is no moment in which
            # the key is neither in flight nor cached.
            await self.cache.put(key, data)

    async def _synthesize(
        self, text: str, voice: str | None, rate: int | None
    ) -> AsyncGenerator[bytes, None]:
        source = self.synthesizer.synthesize(text, voice=voice, rate=rate)
        conv: ToUlaw8k | None = None
        try:
            async for pcm, sample_rate in source:
                if conv is None:
                    conv = ToUlaw8k(sample_rate)
                chunk = conv.push(pcm)
                if chunk:
                    yield chunk
            if conv is not None:
                tail = conv.flush()
                if tail:
                    yield tail
        finally:
            # Close the engine's generator now, not whenever it is collected: espeak
            # stops producing at once, which frees its single thread for other calls.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()
