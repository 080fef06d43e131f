"""The decoders inside one recognition worker, and what each utterance needs of them.

pocketsphinx decodes one utterance at a time per `Decoder`, so a worker that serves several
overlapping utterances holds several decoders (`Slot`s). Memory decides their shape
(measured RSS per decoder with the bundled en-us model): acoustic model ~6 MB, the full
dictionary (135k words) ~21 MB, the language model ~63 MB. Free speech needs all three;
a grammar needs the acoustic model and the words of that grammar only. So each worker has
one full decoder, for language-model utterances, and creates lean decoders (acoustic model,
an empty dictionary, ~6 MB and ~8 ms each) on demand for grammar utterances; a lean decoder
learns the pronunciations of a grammar's words from the full one before it compiles the
grammar. A lean decoder and the full one give the same hypothesis and score for the same
audio (checked on the menu answers of `ivr bench recognizer` in three voices).
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from ivr.speech.sphinx.grammar import GARBAGE_PREFIX
from ivr.speech.sphinx.model import model_paths
from ivr.speech.sphinx.wire import SAMPLE_RATE

if TYPE_CHECKING:
    from pocketsphinx import Decoder

__all__ = ["PHONE_CMN", "Job", "Slot", "band_fill", "make_full_decoder", "make_lean_decoder"]

# Telephone audio upsampled to 16 kHz has nothing at all above 4 kHz, and the bundled
# acoustic model was trained on full-band speech: its top mel filters then see log(0)
# and the decoder loses its way (a 6-phrase grammar found no complete path for 8 of 18
# synthesized answers). Faint noise in that band (about -50 dBFS) gives those filters
# the floor they saw in training. Measured with `ivr bench accuracy`: see the README.
BAND_FILL_LEVEL: Final = 100.0
# The same reasoning for digital silence (µ-law 0xFF decodes to exact zeros, as a muted
# or very clean line sends): a faint white floor (about -55 dBFS) under everything.
WHITE_LEVEL: Final = 60.0

# Cepstral mean of phone-path speech (espeak voices -> 8 kHz µ-law -> 16 kHz, band-filled),
# endpointed as a call does, read with `Decoder.get_cmn()` after 150 such utterances. Live
# CMN starts from the model's full-band prior and adapts during an utterance, so a worker's
# first short answers were decoded with the wrong mean ("support" heard as "hours") and
# results depended on what the worker had decoded before. Every utterance now starts from
# this phone prior.
PHONE_CMN: Final = (
    "53.8512,-9.97024,-1.45364,6.29877,-9.66028,-9.31558,5.37292,-7.23894,-5.78264,"
    "-3.58242,-3.85585,-2.07563,-0.770549"
)
_GRAMMAR_CACHE_SIZE: Final = 32
_MAX_ALTERNATES: Final = 16  # "read", "read(2)", ...: cmudict has at most a handful
# What in a JSGF text is not a word: rule references, tags, weights, comments, keywords.
_NOT_WORDS: Final = re.compile(
    r"<[^>]*>|\{[^}]*\}|/[^/\s]*/|//[^\n]*|/\*.*?\*/|^\s*#JSGF[^;]*;|^\s*grammar[^;]*;",
    re.DOTALL | re.MULTILINE,
)
_WORD: Final = re.compile(r"[^\s|()\[\];=*+]+")


def make_full_decoder() -> Decoder:
    """Acoustic model, full dictionary and language model: any utterance."""
    from pocketsphinx import Decoder

    return Decoder(**model_paths(), samprate=SAMPLE_RATE, loglevel="FATAL")


def make_lean_decoder() -> Decoder:
    """Acoustic model and an empty dictionary: grammar utterances, words added as needed."""
    from pocketsphinx import Config, Decoder

    paths = model_paths()
    config = Config(hmm=paths["hmm"], dict=paths["dict"], samprate=SAMPLE_RATE,
                    loglevel="FATAL")
    config["dict"] = "/dev/null"
    config["lm"] = None
    return Decoder(config)


def band_fill(pcm16: bytes, rng: np.random.Generator, level: float = BAND_FILL_LEVEL) -> bytes:
    """Add faint high-frequency-tilted noise (first difference of white noise)."""
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    tilted = np.diff(rng.standard_normal(len(samples) + 1).astype(np.float32))
    white = rng.standard_normal(len(samples)).astype(np.float32)
    noisy = samples + level * tilted + WHITE_LEVEL * white
    return bytes(np.clip(noisy, -32768, 32767).astype(np.int16).tobytes())


def jsgf_words(jsgf: str) -> set[str]:
    """Every token of a JSGF grammar that may be a word (extra tokens are harmless: the
    dictionary does not know them)."""
    return set(_WORD.findall(_NOT_WORDS.sub(" ", jsgf))) - {"public", "import"}


@dataclass(slots=True, eq=False)
class Job:
    """One utterance inside the worker."""

    id: int
    jsgf: str
    pending: bytearray = field(default_factory=bytearray)
    ended: bool = False
    started: bool = False
    error: str | None = None
    search: str = "lm"
    audio_bytes: int = 0
    cpu_seconds: float = 0.0
    partial: str = ""  # the last partial hypothesis sent
    slot: Slot | None = None
    # Seeded per utterance so the same audio always decodes the same way.
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    @property
    def wants_lm(self) -> bool:
        return not self.jsgf.strip()


class Slot:
    """One decoder, the grammar searches it has compiled, and the job it serves."""

    def __init__(self, decoder: Decoder, lexicon: Decoder | None = None) -> None:
        self.decoder = decoder
        self.lexicon = lexicon  # where a lean decoder looks up pronunciations; None: full
        self.job: Job | None = None
        self._grammars: OrderedDict[str, str] = OrderedDict()  # JSGF digest -> search name

    @property
    def has_lm(self) -> bool:
        return self.lexicon is None

    def begin(self, job: Job) -> None:
        """Start `job`'s utterance on this decoder (errors are recorded on the job)."""
        try:
            if job.wants_lm:
                self.decoder.activate_search()  # the default search: the language model
            else:
                job.search = self._grammar_search(job.jsgf)
                self.decoder.activate_search(job.search)
            self.decoder.set_cmn(PHONE_CMN)
            self.decoder.start_utt()
        except (ValueError, RuntimeError, KeyError) as exc:
            job.error = f"{type(exc).__name__}: {exc}"

    def abandon(self) -> None:
        """Discard the search of an utterance that will not be finished."""
        try:
            self.decoder.end_utt()
        except RuntimeError:
            pass

    def _grammar_search(self, jsgf: str) -> str:
        digest = hashlib.sha1(jsgf.encode()).hexdigest()[:16]
        name = self._grammars.get(digest)
        if name is not None:
            self._grammars.move_to_end(digest)
            return name
        name = "g_" + digest
        words = jsgf_words(jsgf)
        self._learn_garbage(words)
        if self.lexicon is not None:
            self._learn_words(words)
        self.decoder.add_jsgf_string(name, jsgf)  # ValueError on a bad grammar
        self._grammars[digest] = name
        if len(self._grammars) > _GRAMMAR_CACHE_SIZE:
            _, old = self._grammars.popitem(last=False)
            try:
                self.decoder.remove_search(old)
            except KeyError:
                pass
        return name

    def _learn_garbage(self, words: set[str]) -> None:
        """The garbage path's one-phone words (`gbg_aa` is the phone AA): in no dictionary."""
        for word in words:
            if word.startswith(GARBAGE_PREFIX) and self.decoder.lookup_word(word) is None:
                self.decoder.add_word(word, word[len(GARBAGE_PREFIX):].upper(), False)

    def _learn_words(self, words: set[str]) -> None:
        assert self.lexicon is not None
        for word in words:
            if self.decoder.lookup_word(word) is not None:
                continue  # known already (from an earlier grammar)
            for n in range(1, _MAX_ALTERNATES + 1):
                key = word if n == 1 else f"{word}({n})"
                phones = self.lexicon.lookup_word(key)
                if phones is None:
                    break
                self.decoder.add_word(key, phones, False)
