"""Secrets masked in text that leaves a provider call (error messages, response excerpts)."""

from __future__ import annotations

import re

__all__ = ["redact"]

# Bearer tokens and OpenAI-style keys (sk-..., sk-proj-...) wherever they appear in text.
_SECRET = re.compile(r"(?i)(bearer\s+)[^\s'\",]+|\bsk-[A-Za-z0-9_\-]{8,}")


def redact(text: str, *secrets: str) -> str:
    """`text` with the given secrets and anything that looks like an API key masked.

    Applied to every provider error message and response excerpt before it is logged or
    raised, because provider error bodies sometimes echo the request's headers.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _SECRET.sub(lambda m: (m.group(1) or "") + "***", text)
