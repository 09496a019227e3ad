"""What the masking output rail rewrites: private keys, API keys, email addresses and card numbers,
each replaced by a placeholder. The patterns run on the whole answer so far at every stream window, so
each is linear in the text's length."""

from __future__ import annotations

import re

# What the output rail masks, each with its placeholder. A private key is masked from its BEGIN line to
# its END line, or to the end of the text while the END line has not come (a stream is checked as it
# grows, so the key's body never goes out between windows).
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN\s[A-Z ]*PRIVATE\sKEY-----(?:.*?-----END\s[A-Z ]*PRIVATE\sKEY-----|.*\Z)", re.DOTALL),
        "[PRIVATE KEY]",
    ),
    (
        re.compile(
            r"\bsk-[A-Za-z0-9_-]{20,}|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36,}|\bxox[abpr]-[A-Za-z0-9-]{10,}"
        ),
        "[API KEY]",
    ),
    # Starts only where a run of address characters starts: linear time on long runs without an "@".
    (
        re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        "[EMAIL]",
    ),
)
# A run of digit groups split by one space or dash; any stretch of whole groups in it with 13 to 19
# digits that passes the Luhn check is a card number ("4111 1111 1111 1111 12/27", "Step 3 4111 ...").
_DIGIT_RUN = re.compile(r"\d+(?:[ -]\d+)*")
_GROUP = re.compile(r"\d+")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    run = match.group()
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    out, at, i = [], 0, 0
    while i < len(groups):
        best = None  # the longest card starting at group i: one group of 13-19 digits, or groups of 3-6
        digits, first = "", run[groups[i][0] : groups[i][1]]
        for j in range(i, len(groups)):
            group = run[groups[j][0] : groups[j][1]]
            if j > i and not (3 <= len(first) <= 6 and 3 <= len(group) <= 6):
                break
            digits += group
            if len(digits) > 19:
                break
            if len(digits) >= 13 and _luhn(digits):
                best = j
        if best is None:
            i += 1
            continue
        out.append(run[at : groups[i][0]] + "[CARD NUMBER]")
        at, i = groups[best][1], best + 1
    return "".join(out) + run[at:]


def mask_sensitive(text: str) -> str:
    """`text` with private keys, API keys, email addresses and card numbers replaced by placeholders."""
    for pattern, placeholder in _MASKS:
        text = pattern.sub(placeholder, text)
    return _DIGIT_RUN.sub(_mask_card, text)
