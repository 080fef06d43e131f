"""The yes/no grammar of a question whose yes commits (`commit_yes_no_grammar`) against
the plain one (issue 15): real answers kept, other speech rejected.

    PYTHONPATH=. .venv/bin/python -m tests.bench_commit_yes_no   # repo root, ~1 min

A benchmark, not a test: it prints figures and asserts nothing about them. Each utterance
is spoken by espeak-ng in 4 voices (en-us, en-gb, en-us+m3, en-us+f3; the held-out voices
en-gb-x-rp and en-us+f2 are not used) and sent through the phone path (8 kHz µ-law, the
call's endpointer, 16 kHz) to the embedded recognizer with each grammar, then read by the
yes/no parser: a real answer is kept (right meaning), lost (no answer: asked again) or
wrong (the opposite meaning); other speech is rejected (no answer) or taken as a yes/no.
"""

from __future__ import annotations

import asyncio

from ivr.flows.model import SlotDef
from ivr.flows.slots import commit_yes_no_grammar, grammar_for, parse_text
from ivr.grammar import Grammar
from ivr.speech.sphinx.pool import RecognizerPool
from tests.component.test_sphinx import feed_all
from tests.component.test_sphinx_people import NOW, phone

YES_NO = SlotDef(type="yes_no")
VOICES = ("en-us", "en-gb", "en-us+m3", "en-us+f3")
YES = ("yes", "yeah", "yes please", "that is right", "that's right", "correct")
NO = ("no", "nope", "no that is wrong", "no thanks", "that is wrong")
OTHER = ("pizza", "banana", "hello", "what's the weather like", "i want a refund for my shoes",
         "maybe", "hold on")


async def measure(pool: RecognizerPool, grammar: Grammar) -> dict[str, int]:
    counts = dict.fromkeys(("kept", "lost", "wrong", "rejected", "taken"), 0)
    for voice in VOICES:
        for said in YES + NO + OTHER:
            utterance = await pool.start(grammar)
            feed_all(utterance, phone(said, voice))
            rec = await utterance.finish()
            value = parse_text(YES_NO, rec.text, now=NOW) if rec.text else None
            if said in OTHER:
                counts["rejected" if value is None else "taken"] += 1
            elif value is None:
                counts["lost"] += 1
            else:
                counts["kept" if value.value is (said in YES) else "wrong"] += 1
    return counts


async def main() -> None:
    async with RecognizerPool(1, timeout=20) as pool:
        for name, grammar in (("plain yes/no", grammar_for(YES_NO)),
                              ("commit yes/no", commit_yes_no_grammar())):
            c = await measure(pool, grammar)
            real = len(VOICES) * (len(YES) + len(NO))
            other = len(VOICES) * len(OTHER)
            print(f"{name:14} real answers kept {c['kept']}/{real}, lost {c['lost']}, "
                  f"wrong {c['wrong']}; other speech rejected {c['rejected']}/{other}, "
                  f"taken as yes/no {c['taken']}")
    print("reproduce: PYTHONPATH=. .venv/bin/python -m tests.bench_commit_yes_no")


if __name__ == "__main__":
    asyncio.run(main())
