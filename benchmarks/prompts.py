"""Prompts for the load tools: a dataset file read into questions, or seeded random prompts.

`load_questions` reads JSONL, a JSON array (ShareGPT-style files included), CSV with a header row, or a
plain file with one question per line, and names the row it cannot read. Left out: multi-turn
conversations (a row's first user turn is its prompt) and tokenizer-exact prompt lengths (one common
English word is about one token).
"""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path

Message = dict[str, str]
WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name"
).split()


QUESTION_FIELDS = ("question", "text", "prompt", "query", "instruction", "input", "content")
"""Fields a dataset row may hold its prompt in, the first present wins; or `messages`/`conversations`
(OpenAI or ShareGPT turns), whose first user turn is taken."""


def _text(value: object) -> str:
    """A string, or the text of OpenAI content parts (`[{"type": "text", "text": ...}]`); else ""."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(str(p.get("text", "")) for p in value if isinstance(p, dict))
    return ""


def _question(row: object, where: str) -> str | None:
    """The row's prompt: its first prompt field with text, or the first user turn of its conversation.
    None for a row with no text to send (an empty prompt, or a conversation without a user turn: ShareGPT
    files hold such rows); those are left out, as vLLM's benchmark leaves out prompts too short to use."""
    if isinstance(row, str):
        return row if row.strip() else None
    if isinstance(row, dict):
        for name in QUESTION_FIELDS:
            if _text(row.get(name)).strip():
                return _text(row[name])
        turns = row.get("messages") if "messages" in row else row.get("conversations")
        for turn in turns or []:
            if isinstance(turn, dict) and (turn.get("role") or turn.get("from")) in ("user", "human"):
                text = _text(turn.get("content") or turn.get("value"))
                return text if text.strip() else None
        if isinstance(turns, list) or any(name in row for name in QUESTION_FIELDS):
            return None
    raise SystemExit(
        f"{where}: no prompt found; a row needs one of the fields {', '.join(QUESTION_FIELDS)}, "
        "or messages/conversations with a user turn"
    )


def load_questions(path: Path) -> list[str]:
    """Prompts from JSONL, a JSON array (ShareGPT-style files included), CSV with a header row, or a
    plain file with one question per line. See `QUESTION_FIELDS` for where a row's prompt may be.
    Rows with nothing to send (an empty prompt, a conversation without a user turn) are left out, and
    their count printed."""
    found = _load_questions(path)
    questions = [q for q in found if q is not None]
    if skipped := len(found) - len(questions):
        print(
            f"{path}: left out {skipped} of {len(found)} rows with no prompt (empty, or no user turn)", file=sys.stderr
        )
    if not questions:
        raise SystemExit(f"{path}: no prompts in it")
    return questions


def _load_questions(path: Path) -> Sequence[str | None]:
    text = path.read_text(encoding="utf-8-sig")  # files saved by spreadsheet programs start with a BOM
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path}: no prompts in it")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [
            _question({k.strip().lower(): v for k, v in row.items() if k}, f"{path}:{i + 2}")
            for i, row in enumerate(rows)
        ]
    if suffix == ".json" or lines[0].startswith("["):
        parsed: object
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None  # JSONL saved as .json, or plain prompts that start with "[" ("[INST] ...")
        if isinstance(parsed, list):
            return [_question(row, f"{path}[{i}]") for i, row in enumerate(parsed)]
        if parsed is not None:
            raise SystemExit(f"{path}: a JSON dataset must be an array of rows")
    if suffix in (".jsonl", ".json") or _is_json_object(lines[0]):
        return [_question(_json_line(line, f"{path}:{i + 1}"), f"{path}:{i + 1}") for i, line in enumerate(lines)]
    return lines


def _is_json_object(line: str) -> bool:
    """Whether a plain file's first line makes it JSONL (a prompt may start with "{" too)."""
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _json_line(line: str, where: str) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{where}: not a JSON object ({exc.msg}); JSONL takes one object per line") from None


def random_prompts(n: int, tokens: int, seed: int) -> list[str]:
    """n distinct prompts of about `tokens` tokens (one common English word is about one token)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(tokens)) for _ in range(n)]


def as_messages(questions: Sequence[str]) -> list[list[Message]]:
    return [[{"role": "user", "content": q}] for q in questions]
