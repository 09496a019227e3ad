"""What the masking output rail rewrites: private keys, API keys, email addresses and card numbers,
each replaced by a placeholder. The patterns run on the whole answer so far at every stream window, so
each is linear in the text's length. `settled` says how much of a growing answer is masked the same
however it goes on: a stream releases no further than that."""

from __future__ import annotations

import re
import string

import regex

# What the output rail masks, each with its placeholder. A private key is masked from its BEGIN line to
# its END line, or to the end of the text while the END line has not come (a stream is checked as it
# grows, so the key's body never goes out between windows).
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"-----BEGIN\s[A-Z ]*PRIVATE\sKEY(?:\sBLOCK)?-----"
            r"(?:.*?-----END\s[A-Z ]*PRIVATE\sKEY(?:\sBLOCK)?-----|.*\Z)",
            re.DOTALL,
        ),
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


# Every address and API key the patterns above mask lies within one run of these characters, together
# with the word characters around it that decide their `\b` (Unicode letters and digits: "com４" is no
# address end).
_ADDRESS = frozenset(string.ascii_letters + string.digits + "._%+@-")


def _in_run(ch: str) -> bool:
    return ch in _ADDRESS or ch.isalnum() or ch == "_"


# A private key's header while it may still be arriving (a partial match), and its END line.
_HEADER = regex.compile(r"-----BEGIN\s[A-Z ]*PRIVATE\sKEY(?:\sBLOCK)?-----")
_END = re.compile(r"-----END\s[A-Z ]*PRIVATE\sKEY(?:\sBLOCK)?-----")
_SEPARATORS = " -"


def settled(text: str, start: int = 0) -> int:
    """The end of the part of `text` that `mask_sensitive` masks the same whatever text follows; what
    comes after may still become, or grow, a key, an address or a card number: a private key whose END
    line has not come (or a header under way), the run of address characters at the end (a word may yet
    become "name@example.com"), the run of digit groups at the end (a card number may be in mid-group).
    `start`: where the part not yet settled begins (text before it was settled by an earlier call)."""
    holds = [len(text), _digits_from(text, start)]
    for header in _HEADER.finditer(text, start, partial=True):
        if header.partial or not _END.search(text, header.end()):
            holds.append(header.start())
            break
    holds.append(run_start(text, len(text), start))
    return run_start(text, min(holds), start)


def run_start(text: str, i: int, start: int = 0) -> int:
    """`i`, or where the run of address characters or of digit groups around it begins: a cut inside one
    would show the rails a piece ("ab@cd.ef" of "ab@cd.ef1", "5500 0000 0000 " of a card number) that they
    mask differently from the whole."""
    while True:
        at = i
        if i == len(text) or _in_run(text[i]):
            while i > start and _in_run(text[i - 1]):
                i -= 1
        if start < i < len(text) and text[i].isdecimal() and text[i - 1] in _SEPARATORS:
            while i - 2 >= start and text[i - 1] in _SEPARATORS and text[i - 2].isdecimal():
                i -= 1
                while i > start and text[i - 1].isdecimal():
                    i -= 1
        if i == at:
            return i


def _digits_from(text: str, start: int) -> int:
    """Where the run of digit groups that ends `text` (perhaps with one separator, a group to come) begins;
    len(text) when the text does not end in one."""
    i = len(text)
    if i > start and text[i - 1] in _SEPARATORS:
        i -= 1
    begin = len(text)
    while True:
        j = i
        while j > start and text[j - 1].isdecimal():
            j -= 1
        if j == i:
            return begin
        begin = j
        if j - 2 >= start and text[j - 1] in _SEPARATORS and text[j - 2].isdecimal():
            i = j - 1
        else:
            return begin
