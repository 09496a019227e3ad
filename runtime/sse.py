"""Server-sent events as the OpenAI API frames them: `data: {json}\\n\\n`, ending `data: [DONE]\\n\\n`."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"
