"""Local, model-free checks that the default rails call as NeMo actions.

These are deliberately simple pattern checks: the default 135M chat model cannot judge safety
(measured: NeMo's stock `self check input` with it flagged 0 of 60 deepset attacks), so the
default rails must not depend on its verdicts. A trained classifier replaces the input patterns
in the guardrails work; the patterns stay as a cheap first stage.
"""

from __future__ import annotations

import re

# Phrasings that recur in prompt-injection and jailbreak attempts (deepset, DAN-style prompts).
_INJECTION = re.compile(
    r"""
    \b(ignore|disregard|forget|override|bypass)\b[\w\s,']{0,40}?
        \b(previous|prior|above|earlier|all|any|your|the|system)\b[\w\s,']{0,20}?
        \b(instructions?|prompts?|rules|directions|guidelines|context)\b
    | \b(reveal|print|show|repeat|leak|output)\b[\w\s,']{0,30}?
        \b(system|hidden|secret|initial)\s+(prompt|instructions?)\b
    | \byou\s+are\s+now\s+(dan|in\s+developer\s+mode|jailbroken|unfiltered|an?\s+unrestricted)\b
    | \b(do\s+anything\s+now|developer\s+mode\s+enabled|jailbreak\s+mode)\b
    | \bpretend\s+(that\s+)?you\s+(have|are)\s+no\s+(restrictions|rules|guidelines|filters)\b
    """,
    re.IGNORECASE | re.VERBOSE,
)

# Secrets that must never leave in an answer.
_SECRETS = re.compile(
    r"""
    -----BEGIN\s[A-Z ]*PRIVATE\sKEY-----
    | \bsk-[A-Za-z0-9_-]{20,}\b
    | \bAKIA[0-9A-Z]{16}\b
    | \bgh[pousr]_[A-Za-z0-9]{36,}\b
    | \bxox[abpr]-[A-Za-z0-9-]{10,}\b
    """,
    re.VERBOSE,
)


def looks_like_injection(text: str) -> bool:
    return bool(_INJECTION.search(text))


def contains_secret(text: str) -> bool:
    return bool(_SECRETS.search(text))
