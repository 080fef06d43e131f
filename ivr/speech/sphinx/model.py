"""The en-us model bundled with pocketsphinx: where its files are, which words it knows."""

from __future__ import annotations

import functools
import os

__all__ = ["load_vocabulary", "model_paths"]


def model_paths() -> dict[str, str]:
    """The en-us acoustic model, language model and dictionary shipped with pocketsphinx."""
    import pocketsphinx  # on first use: importing the pool must not load the decoder library

    base = os.path.join(pocketsphinx.get_model_path(), "en-us")
    return {
        "hmm": os.path.join(base, "en-us"),
        "lm": os.path.join(base, "en-us.lm.bin"),
        "dict": os.path.join(base, "cmudict-en-us.dict"),
    }


@functools.lru_cache(maxsize=4)
def load_vocabulary(path: str | None = None) -> frozenset[str]:
    """Words of a pocketsphinx dictionary (default: the bundled cmudict-en-us)."""
    words: set[str] = set()
    with open(path or model_paths()["dict"], encoding="utf-8") as f:
        for line in f:
            word = line.split(" ", 1)[0].strip()
            alternate = word.find("(")  # "read(2)" is a second pronunciation of "read"
            words.add(word[:alternate] if alternate > 0 else word)
    words.discard("")
    return frozenset(words)
