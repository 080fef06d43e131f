"""JSGF walked word by word: is a hypothesis a whole sentence of a grammar, and can it go on?

Grammar-aware endpointing (`Grammar.complete`) asks this of every partial hypothesis
(about every 100 ms of a caller's speech), so a grammar is compiled once (`compile_jsgf`
caches it by its text) into a word automaton whose state sets are built on demand and
remembered: walking a hypothesis is a few dictionary look-ups.

It follows the JSGF the project writes (`flows.slots.grammars`, `speech.sphinx.grammar`)
and the usual hand-written kind: rules, `public`, alternatives `|`, sequences, groups
`( )`, optionals `[ ]`, `*` and `+`, rule references, `<NULL>` and `<VOID>`; weights
(`/20/`) and tags (`{...}`) change nothing about which sentences exist and are skipped.
What it cannot follow (an `import`, a recursive rule, a syntax error) gives no walker:
`compile_jsgf` returns None and the caller must assume any answer may go on.

A leaf: the caller passes the function that splits text into words, so a grammar token
("a.m.") is split exactly as a hypothesis is ("a", "m").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from ivr.errors import InvalidValue

__all__ = ["Walker", "compile_jsgf"]

Split = Callable[[str], Sequence[str]]

_TOKEN: Final = re.compile(
    r"""\s*(?:
        (?P<ref><[^<>\s]+>)
      | (?P<weight>/[^/]*/)
      | (?P<tag>\{[^}]*\})
      | (?P<quoted>"[^"]*")
      | (?P<punct>[()\[\]|*+;=])
      | (?P<word>[^\s()\[\]|*+;=<>{}/"]+)
    )""",
    re.VERBOSE,
)
_COMMENT: Final = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_HEADER: Final = re.compile(r"^\s*#JSGF[^;]*;", re.IGNORECASE)
# Inlined rule references grow the automaton; a grammar past this many states is not
# walked (the project's largest, numbers to 999,999, needs about 1,000).
_MAX_STATES: Final = 200_000

# A parsed expansion: ("w", word) | ("ref", name) | ("seq", [..]) | ("alt", [..])
# | ("opt", x) | ("star", x) | ("plus", x)
Node = tuple[str, object]


class _Syntax(InvalidValue):
    """JSGF this walker cannot follow (only inside this module: `compile_jsgf` says None)."""


def _tokens(text: str) -> list[tuple[str, str]]:
    text = _HEADER.sub("", _COMMENT.sub(" ", text), count=1)
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip():
                raise _Syntax(f"JSGF: cannot read {text[pos:pos + 20]!r}")
            break
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
    return out


class _Parser:
    """Recursive descent over one rule's expansion tokens."""

    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks = toks
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def alternatives(self) -> Node:
        alts = [self.sequence()]
        while self.peek() == ("punct", "|"):
            self.i += 1
            alts.append(self.sequence())
        return alts[0] if len(alts) == 1 else ("alt", alts)

    def sequence(self) -> Node:
        items: list[Node] = []
        while (tok := self.peek()) is not None:
            kind, text = tok
            if kind in ("weight", "tag"):
                self.i += 1
            elif kind in ("word", "quoted", "ref") or text in ("(", "["):
                items.append(self.item())
            else:
                break
        return items[0] if len(items) == 1 else ("seq", items)

    def item(self) -> Node:
        kind, text = self.toks[self.i]
        self.i += 1
        node: Node
        if kind == "word":
            node = ("w", text)
        elif kind == "quoted":
            node = ("w", text[1:-1])
        elif kind == "ref":
            node = ("ref", text[1:-1])
        else:
            inner = self.alternatives()
            close = ")" if text == "(" else "]"
            if self.peek() != ("punct", close):
                raise _Syntax(f"JSGF: {text!r} without {close!r}")
            self.i += 1
            node = inner if text == "(" else ("opt", inner)
        while (tok := self.peek()) is not None and (tok in (("punct", "*"), ("punct", "+"))
                                                    or tok[0] == "tag"):
            self.i += 1
            if tok[0] == "punct":
                node = ("star" if tok[1] == "*" else "plus", node)
        return node


def _rules(text: str) -> tuple[dict[str, Node], list[str]]:
    """Every rule's expansion by name, and the public rules' names in order."""
    toks = _tokens(text)
    rules: dict[str, Node] = {}
    public: list[str] = []
    while toks:
        end = toks.index(("punct", ";")) if ("punct", ";") in toks else len(toks)
        stmt, toks = toks[:end], toks[end + 1 :]
        if not stmt:
            continue
        if stmt[0] == ("word", "grammar"):
            continue
        if stmt[0] == ("word", "import"):
            raise _Syntax("JSGF: imports are not followed")
        is_public = stmt[0] == ("word", "public")
        if is_public:
            stmt = stmt[1:]
        if len(stmt) < 2 or stmt[0][0] != "ref" or stmt[1] != ("punct", "="):
            raise _Syntax(f"JSGF: not a rule: {' '.join(t for _, t in stmt)[:40]!r}")
        name = stmt[0][1][1:-1]
        parser = _Parser(stmt[2:])
        rules[name] = parser.alternatives()
        if parser.i != len(parser.toks):
            raise _Syntax(f"JSGF: rule <{name}> does not end where expected")
        if is_public:
            public.append(name)
    return rules, public


@dataclass
class _Nfa:
    """Thompson automaton: epsilon edges and word edges per state."""

    eps: list[list[int]] = field(default_factory=list)
    words: list[list[tuple[str, int]]] = field(default_factory=list)

    def state(self) -> int:
        if len(self.eps) >= _MAX_STATES:
            raise _Syntax("JSGF: grammar too large to walk")
        self.eps.append([])
        self.words.append([])
        return len(self.eps) - 1


class _Builder:
    def __init__(self, rules: dict[str, Node], split: Split) -> None:
        self.rules = rules
        self.split = split
        self.nfa = _Nfa()
        self.active: list[str] = []  # rules being inlined: a repeat is recursion

    def build(self, node: Node) -> tuple[int, int]:
        """A fragment (start, end) for `node`."""
        nfa = self.nfa
        kind, arg = node
        start = nfa.state()
        if kind == "w":
            assert isinstance(arg, str)
            at = start
            for word in self.split(arg):
                nxt = nfa.state()
                nfa.words[at].append((word, nxt))
                at = nxt
            return start, at
        if kind == "ref":
            assert isinstance(arg, str)
            if arg == "NULL":
                return start, start
            if arg == "VOID":
                return start, nfa.state()
            if arg in self.active:
                raise _Syntax(f"JSGF: rule <{arg}> is recursive")
            if arg not in self.rules:
                raise _Syntax(f"JSGF: no rule <{arg}>")
            self.active.append(arg)
            s, e = self.build(self.rules[arg])
            self.active.pop()
            nfa.eps[start].append(s)
            return start, e
        if kind == "seq":
            assert isinstance(arg, list)
            at = start
            for part in arg:
                s, e = self.build(part)
                nfa.eps[at].append(s)
                at = e
            return start, at
        end = nfa.state()
        if kind == "alt":
            assert isinstance(arg, list)
            for part in arg:
                s, e = self.build(part)
                nfa.eps[start].append(s)
                nfa.eps[e].append(end)
            return start, end
        assert isinstance(arg, tuple)
        s, e = self.build(arg)
        nfa.eps[start].append(s)
        nfa.eps[e].append(end)
        if kind in ("opt", "star"):
            nfa.eps[start].append(end)
        if kind in ("star", "plus"):
            nfa.eps[e].append(s)
        return start, end


class Walker:
    """A compiled grammar, walked a word at a time. State sets are built on first use."""

    def __init__(self, nfa: _Nfa, start: int, final: int) -> None:
        self._nfa = nfa
        self._final = final
        self._live = _live(nfa, final)
        self._start = self._closure((start,))
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}
        self._goes_on: dict[frozenset[int], bool] = {}

    def _closure(self, states: Sequence[int]) -> frozenset[int]:
        seen = set(states)
        todo = list(states)
        while todo:
            for nxt in self._nfa.eps[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(s for s in seen if s in self._live)

    def _state(self, words: Sequence[str]) -> frozenset[int]:
        """The states `words` lead to (empty: no sentence starts with them)."""
        at = self._start
        for word in words:
            if not at:
                break
            key = (at, word)
            nxt = self._steps.get(key)
            if nxt is None:
                nxt = self._closure(
                    [t for s in at for w, t in self._nfa.words[s] if w == word])
                self._steps[key] = nxt
            at = nxt
        return at

    def sentence(self, words: Sequence[str]) -> bool:
        """Are `words` a whole sentence of the grammar?"""
        return self._final in self._state(words)

    def goes_on(self, words: Sequence[str]) -> bool:
        """Does a longer sentence start with `words`?"""
        at = self._state(words)
        known = self._goes_on.get(at)
        if known is None:
            known = any(t in self._live for s in at for _, t in self._nfa.words[s])
            self._goes_on[at] = known
        return known

    def complete(self, words: Sequence[str]) -> bool:
        """A whole sentence that no more words can make longer."""
        return self.sentence(words) and not self.goes_on(words)


def _live(nfa: _Nfa, final: int) -> frozenset[int]:
    """States from which the final state can be reached (the others lead nowhere)."""
    back: list[list[int]] = [[] for _ in nfa.eps]
    for s, outs in enumerate(nfa.eps):
        for t in outs:
            back[t].append(s)
    for s, edges in enumerate(nfa.words):
        for _, t in edges:
            back[t].append(s)
    seen = {final}
    todo = [final]
    while todo:
        for prev in back[todo.pop()]:
            if prev not in seen:
                seen.add(prev)
                todo.append(prev)
    return frozenset(seen)


@lru_cache(maxsize=128)
def compile_jsgf(text: str, split: Split, root: str = "answer") -> Walker | None:
    """A walker for `text`'s public rule `root` (or its only public rule); None if the
    grammar is one this module cannot follow. Cached by text: a call asks this of the
    same grammar on every partial hypothesis."""
    try:
        rules, public = _rules(text)
        if root not in rules:
            if len(public) != 1:
                raise _Syntax(f"JSGF: no rule <{root}> and not one public rule")
            root = public[0]
        builder = _Builder(rules, split)
        start, final = builder.build(("ref", root))
    except _Syntax:
        return None
    return Walker(builder.nfa, start, final)
