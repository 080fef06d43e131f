"""IVR_REDACT_DIGITS=1 over the phone: an order number keyed in, and the prompt that reads
it back, appear masked in the stored transcript and in the log (at debug level, where
what callers say is logged at all)."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp.test_utils import TestServer

from ivr.logging import configure
from ivr.server.app import create_app
from ivr.sim.run import run_call
from ivr.sim.script import PressKeys
from ivr.tools.seed import seed
from tests.conftest import make_settings

ORDER = "4567"  # a seeded order of the default caller, +15550100001
SPOKEN = "four five six seven"


@contextlib.contextmanager
def json_log(*, redact_digits: bool) -> Iterator[io.StringIO]:
    """The service's own log configuration at debug level, written to a buffer."""
    saved = structlog.get_config()
    saved = {**saved, "processors": list(saved["processors"])}
    out = io.StringIO()
    try:
        with contextlib.redirect_stderr(out):
            configure("debug", redact_digits=redact_digits)
            yield out
    finally:
        structlog.configure(**saved)


async def test_keyed_order_number_is_masked_in_the_transcript_and_the_log(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, redact_digits=True, recognizer_workers=1)
    await seed(settings.db)
    with json_log(redact_digits=True) as out:
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        try:
            transcript = await run_call(f"ws://127.0.0.1:{server.port}/media",
                                        [PressKeys(ORDER)], flow="order_status",
                                        transcribe=False)
        finally:
            await server.close()
    record: dict[str, Any] | None = transcript.server
    assert record is not None, transcript.errors
    stored = json.dumps(record["turns"])
    assert ORDER not in stored and SPOKEN not in stored
    answer = next(t for t in record["turns"] if t["input_kind"] == "dtmf")
    assert (answer["input_text"], answer["slot_value"]) == ("****", "****")
    assert any("Order ****" in t["prompt"] or "order ****" in t["prompt"]
               for t in record["turns"]), [t["prompt"] for t in record["turns"]]

    logged = out.getvalue()
    assert ORDER not in logged and SPOKEN not in logged
    events = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    # What was keyed and what was read back are logged (at debug), masked.
    keyed = [e for e in events if e["event"] == "turn_text" and e.get("text")]
    assert [e["text"] for e in keyed] == ["****"]
    assert any("****" in e["text"] for e in events if e["event"] == "prompt")
    # Identifiers are not caller data: the call can still be followed through the log.
    assert keyed[0]["call_sid"] == transcript.call_sid
