"""Partial hypotheses from a real pocketsphinx worker: what it has heard so far, while the
audio still comes in (grammar-aware endpointing reads them)."""

from __future__ import annotations

import asyncio
import json
import select
import subprocess
import sys
import time
from typing import IO

from ivr.speech.base import partial_text
from ivr.speech.sphinx import wire
from ivr.speech.sphinx.grammar import grammar_to_jsgf
from ivr.speech.sphinx.model import load_vocabulary
from ivr.speech.sphinx.pool import RecognizerPool
from tests.component.test_sphinx import MENU, feed_all, speech


async def test_pool_utterance_exposes_the_partial_before_the_end() -> None:
    async with RecognizerPool(1, timeout=15) as pool:
        utt = await pool.start(MENU)
        assert partial_text(utt) is None
        feed_all(utt, speech("billing"))  # no end of speech yet
        deadline = time.monotonic() + 15
        while partial_text(utt) != "Billing":  # mapped to the phrase as the flow wrote it
            assert time.monotonic() < deadline, f"partial {partial_text(utt)!r}"
            await asyncio.sleep(0.02)
        assert (await utt.finish()).text == "Billing"


def read_frame(stream: IO[bytes]) -> tuple[bytes, bytes]:
    """The worker's next frame; fails rather than hangs if it sends nothing for 15 s."""
    readable, _, _ = select.select([stream], [], [], 15)
    assert readable, "the worker sent nothing"
    kind, length = wire.HEADER.unpack(read_exactly(stream, wire.HEADER.size))
    return kind, read_exactly(stream, length)


def read_exactly(stream: IO[bytes], n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        assert chunk, "the worker closed its output"
        data += chunk
    return data


def test_worker_sends_changed_partials_until_end_then_the_result() -> None:
    jsgf = grammar_to_jsgf(MENU, load_vocabulary())
    proc = subprocess.Popen([sys.executable, "-m", "ivr.speech.sphinx.worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert read_frame(proc.stdout)[0] == wire.READY
        uid = wire.UTTERANCE_ID.pack(7)
        proc.stdin.write(wire.encode_frame(wire.BEGIN, uid + jsgf.encode())
                         + wire.encode_frame(wire.AUDIO, uid + speech("support")))
        proc.stdin.flush()
        partials: list[str] = []
        while "support" not in partials:
            kind, payload = read_frame(proc.stdout)
            assert kind == wire.PARTIAL
            message = json.loads(payload)
            assert message["id"] == 7
            partials.append(message["text"])
        assert len(set(partials)) == len(partials)  # sent only when it changed
        proc.stdin.write(wire.encode_frame(wire.END, wire.UTTERANCE_ID.pack(7)))
        proc.stdin.close()
        while True:
            kind, payload = read_frame(proc.stdout)
            if kind == wire.RESULT:
                assert json.loads(payload)["text"] == "support"
                break
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait(5)
