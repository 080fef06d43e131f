"""How far apart two answers sound on the phone: pronunciations from the recognizer's own
dictionary and a distance between phone sequences weighted for 8 kHz telephone audio.

What `ivr flows check` uses to warn that a step listens for two answers a caller's
line cannot tell apart (`ivr.flows.check.confusion`). A leaf: it imports nothing of
`ivr.speech`, and finds pocketsphinx's `cmudict-en-us.dict` as package data without
importing pocketsphinx (which would load its decoder library).

Pronunciations: every ARPAbet pronunciation of each word the dictionary has (its
alternates too: "read", "read(2)"); words it lacks get a rough letter-to-sound guess,
flagged as guessed so a warning can say so. A phrase is its words' phones end to end:
the phone line carries no word boundaries.

The distance is an edit distance over phones, divided by the longer sequence's length
(0 = same sounds, 1 = nothing shared). Costs, and why:
- Inserting or deleting a phone costs 1, but `HH` only 0.4: aspiration is weak noise
  that the codec and the line's noise floor swallow.
- A phrase-final consonant counts half, whatever happens to it: final stops are often
  unreleased and final fricatives fade into the line noise the endpointer cuts off.
- Vowel for consonant costs 1, except the glides and `R` beside their vowels
  (`W`/`UW`, `Y`/`IY`, `R`/`ER`: the same gesture, 0.5).
- Consonant for consonant: what differs, added up, at most 1. Telephone audio is
  band-limited to 300-3400 Hz, and what it cuts is much of what tells consonants apart:
  * *place* (lips, teeth, gum ridge, palate, velum) is cued by stop bursts and
    frication noise, most of it above 3.4 kHz: "f"/"s"/"th"/"sh" and "b"/"d"/"g"
    differ mainly there (place is also what listeners lose first in band-limited
    speech, Miller & Nicely 1955). 0.1 per step along the tract, at most 0.3.
  * *voicing* loses its voice bar (below 300 Hz): 0.25 ("b"/"p", "d"/"t", "s"/"z").
  * *manner* shows in the low-frequency envelope and survives best, but not equally:
    a nasal is a stop with a murmur near 250 Hz, which the band's lower edge cuts
    ("b"/"m", "d"/"n": 0.25); a stop and a fricative share a closure-like onset on a
    narrow band ("b"/"v", "t"/"th": 0.35); affricates sit between (0.2-0.25); liquids
    and glides are vowel-like (0.3 between them); the rest 0.45-0.7 (`_MANNER`), and
    `HH` is like nothing else.
  * two or three features at once cost 0.2 more: each cue alone may be lost, but a
    consonant that differs in place and manner still sounds different.
- Vowel for vowel: the formants (F1, F2 up to ~2.5 kHz) survive the band, so vowels
  stay apart better than consonants, but short lax vowels are brief and reduced in
  running speech: 0.3 among `IH EH AE AH UH`; 0.2-0.25 for tense/lax and other
  neighbours (`IY`/`IH`, `UW`/`UH`, `EY`/`EH`, `AA`/`AO`, ...), 0.35 for a diphthong
  and the vowel it starts from, 0.6 otherwise.

`CONFUSABLE_BELOW` (0.35) is set between pairs callers confused on the phone path
(issue 15: "book" heard as "move" 0.32, "tuesday" as "thursday" 0.25, "next wednesday"
as "next monday" 0.18) and answers that must stay apart: "yes"/"no" 0.70, "yep"/"nope"
0.53, "cancel"/"change" 0.52, the shipped menus' and services' answers 0.40 and over
("help"/"hours" 0.40, "cleaning"/"filling" 0.42, "booking"/"person" 0.43). The yes/no
grammar's own "that's right"/"that's not right" is 0.30: a "not" is one short word.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ivr.grammar import ONES

__all__ = [
    "CONFUSABLE_BELOW",
    "Closeness",
    "Dictionary",
    "Pronunciation",
    "closeness",
    "dictionary_path",
    "guess_phones",
    "load_dictionary",
    "phone_distance",
    "pronounce",
]

CONFUSABLE_BELOW: Final = 0.35

# -- the phone set -----------------------------------------------------------------------------

_VOWELS: Final = frozenset(
    "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split()
)
_PLACES: Final = (
    "labial", "labiodental", "dental", "alveolar", "postalveolar", "palatal", "velar", "glottal"
)
# phone -> (place, manner, voiced)
_CONSONANTS: Final[Mapping[str, tuple[str, str, bool]]] = {
    "P": ("labial", "stop", False), "B": ("labial", "stop", True),
    "M": ("labial", "nasal", True), "W": ("labial", "glide", True),
    "F": ("labiodental", "fricative", False), "V": ("labiodental", "fricative", True),
    "TH": ("dental", "fricative", False), "DH": ("dental", "fricative", True),
    "T": ("alveolar", "stop", False), "D": ("alveolar", "stop", True),
    "N": ("alveolar", "nasal", True), "S": ("alveolar", "fricative", False),
    "Z": ("alveolar", "fricative", True), "L": ("alveolar", "liquid", True),
    "R": ("postalveolar", "liquid", True),
    "SH": ("postalveolar", "fricative", False), "ZH": ("postalveolar", "fricative", True),
    "CH": ("postalveolar", "affricate", False), "JH": ("postalveolar", "affricate", True),
    "Y": ("palatal", "glide", True),
    "K": ("velar", "stop", False), "G": ("velar", "stop", True),
    "NG": ("velar", "nasal", True),
    "HH": ("glottal", "aspirate", False),
}

# -- costs (see the module docstring for why) --------------------------------------------------

_INDEL: Final = 1.0
_WEAK_INDEL: Final[Mapping[str, float]] = {"HH": 0.4}
_FINAL_CONSONANT: Final = 0.5
_PLACE_STEP: Final = 0.1
_PLACE_MAX: Final = 0.3
_VOICING: Final = 0.25
_TWO_FEATURES: Final = 0.2
_MANNER: Final[Mapping[frozenset[str], float]] = {
    frozenset({"stop", "nasal"}): 0.25,
    frozenset({"stop", "fricative"}): 0.35,
    frozenset({"stop", "affricate"}): 0.25,
    frozenset({"fricative", "affricate"}): 0.2,
    frozenset({"liquid", "glide"}): 0.3,
    frozenset({"nasal", "liquid"}): 0.45,
    frozenset({"nasal", "fricative"}): 0.5,
}
_MANNER_OTHER: Final = 0.7
_SEMIVOWELS: Final[Mapping[frozenset[str], float]] = {
    frozenset({"W", "UW"}): 0.5, frozenset({"Y", "IY"}): 0.5, frozenset({"R", "ER"}): 0.5,
}
_SHORT_LAX: Final = frozenset({"IH", "EH", "AE", "AH", "UH"})
_SHORT_LAX_COST: Final = 0.3
_NEAR_VOWELS: Final[Mapping[frozenset[str], float]] = {
    **{frozenset(p.split()): 0.25 for p in (
        "IY IH", "EY EH", "AA AO", "AA AH", "AO OW", "AH ER", "EY IY",
        "OW UW",
    )},
    # tense and lax differ mostly in length, which a grammar decoder barely weighs
    frozenset({"UW", "UH"}): 0.2,
    # a diphthong and the vowel it starts from
    **{frozenset(p.split()): 0.35 for p in ("AY AA", "AW AA", "OY AO", "AY AE", "AW AE")},
}
_VOWEL_OTHER: Final = 0.6


def _consonant_cost(a: str, b: str) -> float:
    place_a, manner_a, voiced_a = _CONSONANTS[a]
    place_b, manner_b, voiced_b = _CONSONANTS[b]
    steps = abs(_PLACES.index(place_a) - _PLACES.index(place_b))
    costs = [min(_PLACE_STEP * steps, _PLACE_MAX)] if steps else []
    if manner_a != manner_b:
        costs.append(_MANNER.get(frozenset({manner_a, manner_b}), _MANNER_OTHER))
    if voiced_a != voiced_b:
        costs.append(_VOICING)
    return min(sum(costs) + (_TWO_FEATURES if len(costs) > 1 else 0.0), 1.0)


@functools.cache
def _substitution(a: str, b: str) -> float:
    """The cost of hearing phone `a` as phone `b` on the phone."""
    if a == b:
        return 0.0
    pair = frozenset({a, b})
    if a in _VOWELS and b in _VOWELS:
        if a in _SHORT_LAX and b in _SHORT_LAX:
            return _SHORT_LAX_COST
        return _NEAR_VOWELS.get(pair, _VOWEL_OTHER)
    if a in _CONSONANTS and b in _CONSONANTS:
        return _consonant_cost(a, b)
    return _SEMIVOWELS.get(pair, 1.0)


def _indel(phone: str) -> float:
    return _WEAK_INDEL.get(phone, _INDEL)


def _final_weights(phones: tuple[str, ...]) -> list[float]:
    """Per position, how much an error there counts: a phrase-final consonant half."""
    weights = [1.0] * len(phones)
    if phones and phones[-1] in _CONSONANTS:
        weights[-1] = _FINAL_CONSONANT
    return weights


def phone_distance(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    """Weighted edit distance between two phone sequences over the longer one's length:
    0 sounds the same, 1 shares nothing."""
    if not a and not b:
        return 0.0
    wa, wb = _final_weights(a), _final_weights(b)
    previous = [0.0]
    for j, phone in enumerate(b):
        previous.append(previous[-1] + _indel(phone) * wb[j])
    for i, pa in enumerate(a):
        row = [previous[0] + _indel(pa) * wa[i]]
        for j, pb in enumerate(b, start=1):
            row.append(
                min(
                    previous[j] + _indel(pa) * wa[i],
                    row[j - 1] + _indel(pb) * wb[j - 1],
                    previous[j - 1] + _substitution(pa, pb) * min(wa[i], wb[j - 1]),
                )
            )
        previous = row
    return min(previous[-1] / max(len(a), len(b)), 1.0)


# -- pronunciations ----------------------------------------------------------------------------


def dictionary_path() -> Path | None:
    """pocketsphinx's US English dictionary, found without importing pocketsphinx; None
    when the package is not installed."""
    spec = importlib.util.find_spec("pocketsphinx")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / "model" / "en-us" / "cmudict-en-us.dict"
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=2)
def _entries(path: Path | None) -> Mapping[str, str]:
    """word -> its dictionary lines' phones, "|"-joined; split only when looked up, which
    keeps the one parse per process near 0.1 s for ~135k words."""
    path = path or dictionary_path()
    if path is None:
        return {}
    entries: dict[str, str] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            word, _, phones = line.partition(" ")
            alternate = word.find("(")  # "read(2)" is a second pronunciation of "read"
            word = word[:alternate] if alternate > 0 else word
            known = entries.get(word)
            entries[word] = phones if known is None else f"{known}|{phones}"
    return entries


class Dictionary(Mapping[str, tuple[tuple[str, ...], ...]]):
    """A pronouncing dictionary as word -> its pronunciations (phone tuples)."""

    def __init__(self, entries: Mapping[str, str]) -> None:
        self._entries = entries

    def __getitem__(self, word: str) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(p.split()) for p in self._entries[word].split("|") if p.strip())

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def load_dictionary(path: Path | None = None) -> Dictionary:
    """pocketsphinx's dictionary (or the one at `path`), read once per process. Without
    pocketsphinx it is empty, and every word is guessed."""
    return Dictionary(_entries(path))


# Letter-to-sound for words the dictionary lacks: longest spelling first. Rough on
# purpose (English spelling is not rules), enough to compare a made-up brand name.
_SPELLINGS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = tuple(
    sorted(
        (
            (s, tuple(p.split()))
            for s, p in {
                "tch": "CH", "sch": "S K", "igh": "AY", "ough": "AO",
                "ch": "CH", "sh": "SH", "th": "TH", "ph": "F", "wh": "W", "ck": "K", "ng": "NG",
                "qu": "K W", "kn": "N", "wr": "R", "gh": "G",
                "ee": "IY", "ea": "IY", "oo": "UW", "ou": "AW", "ow": "OW", "oa": "OW",
                "ai": "EY", "ay": "EY", "ei": "EY", "ey": "EY", "oi": "OY", "oy": "OY",
                "au": "AO", "aw": "AO", "ie": "IY", "ue": "UW", "er": "ER", "ir": "ER",
                "ur": "ER", "ar": "AA R", "or": "AO R",
                "a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G",
                "h": "HH", "i": "IH", "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N",
                "o": "AA", "p": "P", "q": "K", "r": "R", "s": "S", "t": "T", "u": "AH",
                "v": "V", "w": "W", "x": "K S", "y": "IY", "z": "Z",
            }.items()
        ),
        key=lambda item: -len(item[0]),
    )
)
_DOUBLED: Final = re.compile(r"([b-df-hj-np-tv-z])\1")


def guess_phones(word: str) -> tuple[str, ...]:
    """A rough pronunciation from spelling: doubled consonants once, a final silent
    "e" dropped, "y" a consonant before a vowel."""
    text = _DOUBLED.sub(r"\1", re.sub(r"[^a-z]", "", word.lower()))
    if len(text) > 2 and text.endswith("e") and text[-2] not in "aeiouy":
        text = text[:-1]
    phones: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "y" and i + 1 < len(text) and text[i + 1] in "aeiou":
            phones.append("Y")
            i += 1
            continue
        for spelling, sounds in _SPELLINGS:
            if text.startswith(spelling, i):
                phones.extend(sounds)
                i += len(spelling)
                break
        else:
            i += 1
    return tuple(phones)


_TOKEN: Final = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class Pronunciation:
    """One way to say a phrase: its phones, and the words that had to be guessed."""

    phones: tuple[str, ...]
    guessed: tuple[str, ...] = ()

    def __str__(self) -> str:
        return " ".join(self.phones)


def _word_prons(
    word: str, dictionary: Mapping[str, tuple[tuple[str, ...], ...]]
) -> tuple[tuple[tuple[str, ...], ...], bool]:
    if word.isdigit():
        spelled = [dictionary.get(ONES[int(d)], (guess_phones(ONES[int(d)]),))[0] for d in word]
        return (tuple(itertools.chain.from_iterable(spelled)),), False
    known = dictionary.get(word) or dictionary.get(word.strip("'"))
    if known:
        return known, False
    return (guess_phones(word),), True


# Alternates multiply across a phrase's words; a few per phrase is plenty to find the
# closest pair, and it keeps a long phrase of many-pronunciation words cheap.
_MAX_PRONUNCIATIONS: Final = 8


def pronounce(
    phrase: str, dictionary: Mapping[str, tuple[tuple[str, ...], ...]] | None = None
) -> tuple[Pronunciation, ...]:
    """The ways to say `phrase` (its words' pronunciations end to end), from the
    dictionary (default: pocketsphinx's), guessing words it lacks."""
    words = _TOKEN.findall(phrase.lower())
    table = load_dictionary() if dictionary is None else dictionary
    choices: list[tuple[tuple[str, ...], ...]] = []
    guessed: list[str] = []
    for word in words:
        prons, was_guessed = _word_prons(word, table)
        choices.append(prons)
        if was_guessed:
            guessed.append(word)
    combined = itertools.islice(itertools.product(*choices), _MAX_PRONUNCIATIONS)
    return tuple(
        Pronunciation(tuple(itertools.chain.from_iterable(parts)), tuple(guessed))
        for parts in combined
    )


@dataclass(frozen=True, slots=True)
class Closeness:
    """How close two phrases come: the closest pair of their pronunciations."""

    distance: float
    first: Pronunciation
    second: Pronunciation

    @property
    def confusable(self) -> bool:
        return self.distance < CONFUSABLE_BELOW


def closeness(
    a: str, b: str, dictionary: Mapping[str, tuple[tuple[str, ...], ...]] | None = None
) -> Closeness:
    """The smallest distance between any way to say `a` and any way to say `b`."""
    pairs: Iterable[tuple[Pronunciation, Pronunciation]] = itertools.product(
        pronounce(a, dictionary), pronounce(b, dictionary)
    )
    return min(
        (Closeness(phone_distance(x.phones, y.phones), x, y) for x, y in pairs),
        key=lambda c: c.distance,
    )
