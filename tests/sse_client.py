"""Parse an OpenAI-style SSE body into its JSON events (test helper; strict about the framing)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def parse_events(lines: Iterable[str]) -> tuple[list[dict[str, Any]], bool]:
    """JSON payloads of `data:` lines, and whether `[DONE]` ended the stream."""
    events: list[dict[str, Any]] = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        data = line[len("data: ") :]
        if data == "[DONE]":
            return events, True
        events.append(json.loads(data))
    return events, False
