"""What a caller is expected to say: the one type flows hand to recognizers.

A leaf shared by `flows` (which builds grammars from a step's answers) and `speech`
(which constrains decoding to them), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Grammar:
    """What the caller is expected to say; recognizers may constrain decoding to it.

    Either a list of `phrases`, or (for structured answers such as dates, times and digit
    strings) a complete JSGF grammar in `jsgf` whose public rule is `<answer>`; `phrases`
    then lists a few examples for engines that only take hints (remote prompts).
    """

    phrases: tuple[str, ...] = ()
    jsgf: str | None = None
