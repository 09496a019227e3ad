"""Local, model-free checks that the default rails call as NeMo actions, and the invisible characters
they strip first.

These are deliberately simple pattern checks: the default 135M chat model cannot judge safety
(measured: NeMo's stock `self check input` with it flagged 0 of 60 deepset attacks), so the
default rails must not depend on its verdicts. A trained classifier replaces the input patterns
in the guardrails work; the patterns stay as a cheap first stage.
"""

from __future__ import annotations

import re

import regex

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

# Instructions planted in documents for the model that reads them (indirect injection): the phrasings
# of `_INJECTION`, plus text that addresses an AI reader, chat-template markers, "reply only with"
# orders and their German forms (the deepset data is partly German). Document prose rarely says these:
# on 969 chunks of the shared docs and 600 SciFact abstracts none matched, where the prompt
# classifier (trained on user prompts) flagged 74% of the docs.
_PLANTED = re.compile(
    # One word boundary before all the word-led forms, instead of one each: re tries the forms only where
    # a word starts (half the CPU per chunk, and the same matches, on 3,517 docs chunks, abstracts and prompts).
    r"""
    \b(?:
        (if|when|whenever)\s+you\s+are\s+an?\s+(ai|llm|language\s+model|assistant|chatbot|bot)\b
        | (attention|note|message|instructions?)\s+(to|for)\s+(the\s+|any\s+|all\s+)?
            (ai|llms?|language\s+models?|assistants?|chatbots?|bots?)\b
        | (ai|llm|language\s+model|assistant|chatbot)s?\s+(reading|processing|summari[sz]ing)\s+this\b
        | (new|updated|real|actual|important)\s+instructions?\s*:
        | (respond|reply|answer|say|output)\s+(only\s+)?with\s+(only\s+)?["'“]
        | (respond|reply|answer)\s+only\s+(with|in)\b
        | (do\s+not|don't|never)\s+(tell|mention|reveal|inform)\s+(this\s+to\s+)?the\s+user\b
        | (forget|ignore|disregard|drop)\s+(about\s+)?(everything|all)\b
        | (ignore|disregard|forget)\s+(the\s+)?(above|previous|prior|earlier)\b
        | (i\s+want\s+you\s+to|please|you\s+will\s+now|from\s+now\s+on,?\s+you)\s+(act|behave|pretend)\b
        | from\s+now\s+on,?\s+you\b | pretend\s+(that\s+)?you\s+are\b
        | (now|here)\s+(comes?|follows?)\s+(a\s+|the\s+)?(new|further|another|second)\s+
            (task|challenge|instruction|test)s?\b
        | your\s+new\s+task\b | new\s+(tasks|instructions)\s+follow
        | do\s+not\s+answer\b[\w\s,]{0,30}\b(but|instead)\b
        | (vergiss|vergessen\s+sie|ignoriere|ignorieren\s+sie|olvid[ae])\b[\w\s,]{0,40}?
            \b(alles?|alle|anweisungen|aufgaben|befehle|vorherigen|vorangehenden|obigen|zuvor|todo|todas)\b
        | neue\s+(anweisung|aufgabe) | (ich\s+möchte,?\s+dass\s+sie\s+als|stell\s+dir\s+vor,?\s+du\s+bist)\b
        | (jetzt|nun)\s+(bist\s+du|folgen\s+(weitere|neue))\b
    )
    | ^[^\S\n]*(system|assistant)[^\S\n]*:\s
    | <\|(im_start|im_end|system|user|assistant|endoftext)\|> | \[/?INST\] | <</?SYS>> | \#\#\#\s*(instruction|system)\b
    """,
    re.IGNORECASE | re.VERBOSE | re.MULTILINE,
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


# Every format character (Unicode category Cf, as of Unicode 14): zero-width spaces and joiners, bidi
# controls, the tag characters U+E0000-E007F that can spell hidden ASCII, the soft hyphen. Invisible
# to a reader, they hide instructions in a document or split trigger words apart.
_HIDDEN = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U00013438"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)


# A zero-width non-joiner or joiner between two letters, marks or symbols outside ASCII spells a word or an
# emoji: Persian "می‌خواهم", Indic conjuncts, 👨‍👩‍👧. Between Latin letters it only splits a trigger word apart.
_JOINER_IN_WORD = regex.compile(
    r"(?<=[\p{L}\p{M}\p{So}])(?<![\x00-\x7f])[\u200c\u200d](?=[\p{L}\p{M}\p{So}])(?![\x00-\x7f])"
)


def strip_hidden(text: str) -> str:
    return _HIDDEN.sub("", text)


def strip_hidden_but_joiners(text: str) -> str:
    """`strip_hidden`, keeping the joiners that are part of a word in another script (the text a model
    and a reader are shown; the checks read `strip_hidden`'s text, where no joiner is left)."""
    kept = {m.start() for m in _JOINER_IN_WORD.finditer(text)}
    if not kept:
        return strip_hidden(text)
    return _HIDDEN.sub(lambda m: m.group() if m.start() in kept else "", text)


def looks_like_injection(text: str) -> bool:
    return bool(_INJECTION.search(text))


def looks_planted(text: str) -> bool:
    """True when a retrieved chunk carries instructions for the model (see `_PLANTED`)."""
    return bool(_INJECTION.search(text) or _PLANTED.search(text))


def contains_secret(text: str) -> bool:
    return bool(_SECRETS.search(text))
