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

import functools
import hashlib
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import numpy as np

from ivr.errors import InvalidValue
from ivr.speech.sphinx.grammar import GARBAGE_PREFIX
from ivr.speech.sphinx.model import model_paths
from ivr.speech.sphinx.wire import SAMPLE_RATE

if TYPE_CHECKING:
    from pocketsphinx import Config, Decoder

__all__ = [
    "PHONE_CMN",
    "SPHINX_CONFIG_ENV",
    "Job",
    "Slot",
    "band_fill",
    "check_decoder_overrides",
    "decoder_overrides",
    "make_full_decoder",
    "make_lean_decoder",
]

# Telephone audio upsampled to 16 kHz has nothing at all above 4 kHz, and the bundled
# acoustic model was trained on full-band speech: its top mel filters then see log(0)
# and the decoder loses its way (a 6-phrase grammar found no complete path for 8 of 18
# synthesized answers). Faint noise in that band (about -50 dBFS) gives those filters
# the floor they saw in training. Measured with `ivr bench accuracy`: see the README.
# Re-swept on the set above (248/307 at 100 and 60): band_fill 0/30/60/150/300/1000 gives
# 233/238/240/251/204/141 (150: 105 of 172 on `ivr bench slots`, against 113), white
# 0/20/40/90/200 237/236/240/237/234.
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
# Decoder settings of the phone path over the model's own (feat.params, pocketsphinx
# defaults): none. Swept one at a time with IVR_SPHINX_CONFIG on `ivr bench accuracy`
# (dental_booking 2 voices and people's phrasings 3 voices, demo, main_menu, order_status
# in 4 voices: 248/307 as shipped; README, "Measured"): the beams (beam 1e-40..1e-80,
# wbeam, pbeam) 241-249, wip 0.1-4 237-250, pip 0.1/0.5 227/246, silprob 0.001-0.5
# 239-251, fillprob 247, lw 3/10 244/234, topn 2/8 243/240 (CPU -15 %/+20 %), dither 249,
# cmn live 248, 100-300 ms more trailing silence (a trial change) 247-248; remove_noise
# no 234; the model's mel filterbank narrowed to the phone band (upperf 3800 or 4000,
# nfilt 20) 101-137. The best pair (silprob 0.2, wbeam 1e-36: 254) did not carry over to the other
# set (`ivr bench slots`, 113 -> 112 of 172), so nothing here is changed.
PHONE_DECODER: Final[dict[str, str]] = {}

# `IVR_SPHINX_CONFIG="beam=1e-60,wip=0.5"`: pocketsphinx Config settings over
# PHONE_DECODER, for measuring (`ivr bench accuracy`) without code edits; also our own
# `band_fill=` and `white=` (the levels above). An unknown key or a malformed item is a
# ValueError naming it, raised where the decoder is built.
SPHINX_CONFIG_ENV: Final = "IVR_SPHINX_CONFIG"
_OWN_KEYS: Final = ("band_fill", "white")
_FLAGS: Final = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}

_GRAMMAR_CACHE_SIZE: Final = 32
_MAX_ALTERNATES: Final = 16  # "read", "read(2)", ...: cmudict has at most a handful
# What in a JSGF text is not a word: rule references, tags, weights, comments, keywords.
_NOT_WORDS: Final = re.compile(
    r"<[^>]*>|\{[^}]*\}|/[^/\s]*/|//[^\n]*|/\*.*?\*/|^\s*#JSGF[^;]*;|^\s*grammar[^;]*;",
    re.DOTALL | re.MULTILINE,
)
_WORD: Final = re.compile(r"[^\s|()\[\];=*+]+")


def decoder_overrides(text: str | None = None) -> dict[str, str]:
    """`key=value,...` (default: the `IVR_SPHINX_CONFIG` environment variable) as a dict;
    ValueError on an item without `=`, an empty key or value, or a key given twice. The
    keys are checked against pocketsphinx's Config where the decoder is built."""
    if text is None:
        text = os.environ.get(SPHINX_CONFIG_ENV, "")
    out: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, eq, value = (part.strip() for part in item.partition("="))
        key = key.lstrip("-")
        if not eq or not key or not value:
            raise InvalidValue(f"{SPHINX_CONFIG_ENV}: {item.strip()!r} is not key=value")
        if key in out:
            raise InvalidValue(f"{SPHINX_CONFIG_ENV}: {key!r} given twice")
        if key in _OWN_KEYS:
            try:
                float(value)
            except ValueError:
                raise InvalidValue(f"{SPHINX_CONFIG_ENV}: {key}={value!r} is not a number"
                                 ) from None
        out[key] = value
    return out


@functools.cache
def _settings() -> tuple[dict[str, str], float, float]:
    """(pocketsphinx settings, band-fill level, white level) of this process."""
    overrides = decoder_overrides()
    config = {**PHONE_DECODER, **{k: v for k, v in overrides.items() if k not in _OWN_KEYS}}
    return (config, float(overrides.get("band_fill", BAND_FILL_LEVEL)),
            float(overrides.get("white", WHITE_LEVEL)))


def _apply(config: Config) -> Config:
    for key, value in _settings()[0].items():
        try:
            # pocketsphinx takes any non-empty string as a true flag ("no" included)
            config[key] = _flag(value) if isinstance(config[key], bool) else value
        except KeyError:
            raise InvalidValue(f"{SPHINX_CONFIG_ENV}: pocketsphinx has no setting {key!r}"
                             ) from None
        except (ValueError, TypeError) as exc:
            raise InvalidValue(f"{SPHINX_CONFIG_ENV}: {key}={value!r}: {exc}") from None
    return config


def _flag(value: str) -> bool:
    flag = _FLAGS.get(value.lower())
    if flag is None:
        raise InvalidValue("not yes or no")
    return flag


def _decoder(config: Config) -> Decoder:
    """A decoder with our settings, front-end ones included: the model's feat.params
    (remove_noise, upperf, cmn, ...) overwrite those of the Config a decoder is built
    from, so they are set again afterwards and the feature extraction rebuilt."""
    from pocketsphinx import Decoder

    decoder = Decoder(_apply(config))
    settings = _settings()[0]
    before = {key: decoder.config[key] for key in settings}
    _apply(decoder.config)
    if any(decoder.config[key] != before[key] for key in settings):
        decoder.reinit_feat()
    return decoder


def check_decoder_overrides() -> None:
    """Raise the ValueError a worker would, before any worker starts (no model loaded)."""
    from pocketsphinx import Config

    _settings.cache_clear()
    _apply(Config(loglevel="FATAL"))


def make_full_decoder() -> Decoder:
    """Acoustic model, full dictionary and language model: any utterance."""
    from pocketsphinx import Config

    return _decoder(Config(**model_paths(), samprate=SAMPLE_RATE, loglevel="FATAL"))


def make_lean_decoder() -> Decoder:
    """Acoustic model and an empty dictionary: grammar utterances, words added as needed."""
    from pocketsphinx import Config

    paths = model_paths()
    config = Config(hmm=paths["hmm"], dict=paths["dict"], samprate=SAMPLE_RATE,
                    loglevel="FATAL")
    config["dict"] = "/dev/null"
    config["lm"] = None
    return _decoder(config)


def band_fill(pcm16: bytes, rng: np.random.Generator, level: float | None = None) -> bytes:
    """Add faint high-frequency-tilted noise (first difference of white noise)."""
    _, fill, white_level = _settings()
    level = fill if level is None else level
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    tilted = np.diff(rng.standard_normal(len(samples) + 1).astype(np.float32))
    white = rng.standard_normal(len(samples)).astype(np.float32)
    noisy = samples + level * tilted + white_level * white
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
