"""espeak-ng speech synthesis through ctypes (`espeakng-loader` ships the library and data).

espeak-ng keeps all of its state in globals and is not thread-safe, so every call into the
library, from any `EspeakSynthesizer`, runs on one dedicated thread. `espeak_Synth` releases
the GIL (it is a plain ctypes call), so synthesis does not stall the event loop; the synth
callback hands each chunk to the loop as soon as espeak produces it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import threading
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

import espeakng_loader

from ivr.errors import SpeechError

__all__ = ["EspeakError", "EspeakSynthesizer", "synthesize_blocking"]

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2  # espeak_Synth blocks and hands samples to the callback
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_EE_OK = 0

_BUFFER_MS = 100  # callback granularity; at espeak's speed the first chunk is still quick
_MIN_RATE, _MAX_RATE = 80, 450  # words per minute espeak-ng accepts
_CHUNK_TIMEOUT = 30.0  # generous: synthesis runs at hundreds of times real time

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(SpeechError):
    """espeak-ng failed to initialize, rejected a voice, or failed to synthesize."""


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),  # packed (priority byte, NUL-terminated code) pairs
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


# A sink receives each PCM16 chunk and the sample rate; returning False aborts synthesis.
_Sink = Callable[[bytes, int], bool]


@dataclass(slots=True)
class _Outcome:
    samples: int = 0
    aborted: bool = False


class _Engine:
    """The process-wide espeak-ng instance; every method except `submit` runs on its thread."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="espeak"
        )
        self._lib: ctypes.CDLL | None = None
        self._callback: object = None  # kept alive: espeak holds the pointer
        self._sink: _Sink | None = None
        self._outcome = _Outcome()
        self._voice: str | None = None
        self._languages: dict[str, str] | None = None
        self.sample_rate = 0

    def submit(
        self, text: str, voice: str, rate: int, sink: _Sink
    ) -> concurrent.futures.Future[_Outcome]:
        return self._executor.submit(self._synthesize, text, voice, rate, sink)

    def submit_init(self) -> concurrent.futures.Future[int]:
        return self._executor.submit(self._init)

    def _init(self) -> int:
        if self._lib is not None:
            return self.sample_rate
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.c_void_p,)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        )
        lib.espeak_Synth.restype = ctypes.c_int
        rate: int = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            espeakng_loader.get_data_path().encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate})")
        self._callback = _SynthCallback(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self.sample_rate = rate
        return rate

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], count: int, _events: int) -> int:
        # Runs inside espeak_Synth on the engine thread; an exception here would be swallowed
        # by ctypes, so failures turn into an abort instead.
        sink = self._sink
        if sink is None:
            return 1
        if count <= 0 or not wav:
            return 0
        try:
            keep_going = sink(ctypes.string_at(wav, count * 2), self.sample_rate)
        except Exception:
            keep_going = False
        if not keep_going:
            self._outcome.aborted = True
            return 1
        self._outcome.samples += count
        return 0

    def _select_voice(self, voice: str) -> None:
        lib = self._lib
        assert lib is not None
        if voice == self._voice:
            return
        if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            # Language codes such as "en-gb" are not voice names in espeak-ng ("gmw/en" is
            # British English), so fall back to the voice that lists the code as a language.
            base, plus, variant = voice.partition("+")
            identifier = self._language_map().get(base.lower())
            if (
                identifier is None
                or lib.espeak_SetVoiceByName((identifier + plus + variant).encode()) != _EE_OK
            ):
                self._voice = None
                raise EspeakError(f"unknown espeak-ng voice {voice!r}")
        self._voice = voice

    def _language_map(self) -> dict[str, str]:
        if self._languages is not None:
            return self._languages
        lib = self._lib
        assert lib is not None
        best: dict[str, tuple[int, str]] = {}
        voices = lib.espeak_ListVoices(None)
        i = 0
        while voices[i]:
            entry = voices[i].contents
            identifier = (entry.identifier or b"").decode()
            pos = entry.languages
            while pos:
                priority = ctypes.c_ubyte.from_address(pos).value
                if priority == 0:
                    break
                code = ctypes.string_at(pos + 1).decode()
                if code and (code not in best or priority < best[code][0]):
                    best[code] = (priority, identifier)
                pos += len(code) + 2
            i += 1
        self._languages = {code: ident for code, (_, ident) in best.items()}
        return self._languages

    def _synthesize(self, text: str, voice: str, rate: int, sink: _Sink) -> _Outcome:
        self._init()
        lib = self._lib
        assert lib is not None
        self._select_voice(voice)
        lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
        data = text.encode("utf-8") + b"\0"
        self._outcome = outcome = _Outcome()
        self._sink = sink
        try:
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
        finally:
            self._sink = None
        if status != _EE_OK and not outcome.aborted:
            raise EspeakError(f"espeak_Synth failed ({status})")
        return outcome


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def _clamp_rate(rate: int) -> int:
    return max(_MIN_RATE, min(_MAX_RATE, int(rate)))


def synthesize_blocking(text: str, voice: str = "en-us", rate: int = 175) -> tuple[bytes, int]:
    """Synthesize all of `text`; returns (PCM16 mono, sample rate). For tools, not the loop."""
    chunks: list[bytes] = []

    def sink(chunk: bytes, _rate: int) -> bool:
        chunks.append(chunk)
        return True

    engine = _get_engine()
    engine.submit(text, voice, _clamp_rate(rate), sink).result()
    return b"".join(chunks), engine.sample_rate


class _Handoff:
    """Chunks from the engine thread to one consumer on the loop.

    espeak produces audio hundreds of times faster than real time; posting every chunk to
    the loop separately would cost a loop wake-up and a GIL handover per chunk. Instead the
    thread appends under a lock and wakes the loop only when the consumer has drained
    everything posted before, so a slow consumer receives larger batches.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        self._done = False
        self._wake_pending = False
        self._event = asyncio.Event()
        self.stopped = False  # set by the consumer: the engine aborts at its next chunk
        self.sample_rate = 0

    def put(self, chunk: bytes, sample_rate: int) -> bool:
        """Engine thread: queue a chunk; False asks espeak to abort."""
        if self.stopped:
            return False
        with self._lock:
            self.sample_rate = sample_rate
            self._chunks.append(chunk)
            return self._wake()

    def finish(self, _: object = None) -> None:
        """Any thread: no more chunks will come."""
        with self._lock:
            self._done = True
            self._wake()

    def _wake(self) -> bool:
        if self._wake_pending:
            return True
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._event.set)
        except RuntimeError:  # the loop is gone: nobody will read the rest
            return False
        return True

    async def get(self) -> tuple[bytes, bool]:
        """Loop: everything produced since the last call, and whether production ended."""
        await asyncio.wait_for(self._event.wait(), _CHUNK_TIMEOUT)
        with self._lock:
            self._event.clear()
            self._wake_pending = False
            chunks, self._chunks = self._chunks, []
            return b"".join(chunks), self._done


class EspeakSynthesizer:
    """`Synthesizer` backed by espeak-ng; instances share the one process-wide engine."""

    name = "espeak-ng"

    def __init__(self, voice: str = "en-us", rate: int = 175) -> None:
        self.voice = voice
        self.rate = _clamp_rate(rate)

    async def warm_up(self) -> int:
        """Load the library and data now rather than on the first prompt; returns the rate."""
        return await asyncio.wrap_future(_get_engine().submit_init())

    def synthesize_blocking(
        self, text: str, voice: str | None = None, rate: int | None = None
    ) -> tuple[bytes, int]:
        return synthesize_blocking(text, voice or self.voice, rate or self.rate)

    async def synthesize(
        self, text: str, *, voice: str | None = None, rate: int | None = None
    ) -> AsyncGenerator[tuple[bytes, int], None]:
        handoff = _Handoff(asyncio.get_running_loop())
        future = _get_engine().submit(
            text, voice or self.voice, _clamp_rate(rate or self.rate), handoff.put
        )
        future.add_done_callback(handoff.finish)
        try:
            done = False
            while not done:
                try:
                    pcm, done = await handoff.get()
                except TimeoutError:
                    raise EspeakError("espeak-ng produced no audio in time") from None
                if pcm:
                    yield pcm, handoff.sample_rate
            future.result()  # surface EspeakError raised on the engine thread
        finally:
            handoff.stopped = True
            # A job still queued behind other prompts need not run at all; a running one
            # aborts at its next callback, so waiting for it is brief and leaves the engine
            # idle for whoever is next.
            if not future.cancel() and not future.done():
                await asyncio.wait([asyncio.wrap_future(future)], timeout=_CHUNK_TIMEOUT)
