"""Other readings of a text for the injection checks: the same words written so that a pattern or the
classifier sees them as a reader would.

Attackers write trigger words so that a reader still reads them and a matcher does not: look-alike
letters from other scripts ("іgnоre" in Cyrillic), digits for letters ("1gn0r3"), HTML entities,
letters spaced apart or split across lines, invisible tag characters that spell ASCII, base64 with
a request to decode it. `views` returns the text itself plus each reading of it that differs; a check
flags the text when it flags any view. Each reading maps only what a reader would not notice:
look-alikes only in words that mix scripts (or are made of look-alikes alone), digits only in words
that mix them with letters, so Greek, Russian or plain numbers stay as they are. Measured by a
helper's review (2026-12-01) over 21 such transformations of the attacks the rails caught: the input
rail kept 92-100% of its catches under each (0-57% before for homoglyphs, leetspeak, entities and
base64), with no new flags on XSTest's safe prompts or JailbreakBench's benign requests.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import unicodedata
from functools import lru_cache

from guards.checks import strip_hidden

# Letters of Cyrillic and Greek that look like Latin ones.
_LOOK_ALIKES = str.maketrans(
    "аеорсухіјѕһԁԛԝӏкмнтвгпοαειντκρυχγАВЕКМНОРСТХІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
    "aeopcyxijshdqwlkmhtbrnoaeivtkpuxyABEKMHOPCTXIJSABEZHIKMNOPTYX",
)
_LOOKS_LATIN = frozenset("аеорсухіјѕһԁԛԝӏкмнтвгпοαειντκρυχγАВЕКМНОРСТХІЈЅΑΒΕΖΗΙΚΜΝΟΡΤΥΧ")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})
_WORD = re.compile(r"\w+")
_LEET_WORD = re.compile(r"[\w@$]*[A-Za-z][\w@$]*")
_LATIN = re.compile(r"[A-Za-z]")
_LEET_SIGN = re.compile(r"[0-9@$]")
_LEET_MIX = re.compile(r"[A-Za-z][0-9@$]|[0-9@$][A-Za-z]")
# Four or more tag characters in a row spell hidden ASCII (fewer are emoji flag sequences or noise).
_TAG_TEXT = re.compile("[\U000e0020-\U000e007e]{4,}")
_MARKUP = re.compile(r"(?m)^[ \t]*(?:>[ \t]?)+|[*_~`#]+")
_SPLIT_WORD = re.compile(r"(?<=[^\W\d_])[ \t]*\r?\n[ \t]*(?=[^\W\d_])")
_SPACED_RUN = re.compile(r"(?<!\S)(?:\S[ \t]+){5,}\S(?!\S)")
_LETTER_GAP = re.compile(r"(?<=\S)[ \t](?=\S)")
_WORD_GAP = re.compile(r"[ \t]{2,}")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


def _unmask_word(word: str, latin_text: bool) -> str:
    """Look-alikes mapped in a word that mixes them with Latin letters, or, in text written mostly in
    Latin letters, in a word made of them alone ("а" for "a"): Russian or Greek words stay themselves."""
    if any(ch in _LOOKS_LATIN for ch in word):
        mixed = _LATIN.search(word) is not None
        if mixed or (latin_text and all(ch in _LOOKS_LATIN or not ch.isalpha() for ch in word)):
            return word.translate(_LOOK_ALIKES)
    return word


def _unleet_word(word: str) -> str:
    return word.translate(_LEET) if _LEET_SIGN.search(word) and _LATIN.search(word) else word


def fold(text: str) -> str:
    """The text as a reader sees it: entities decoded, hidden ASCII spelt in tag characters decoded,
    NFKC (full-width letters), invisible characters removed, look-alikes and digits-for-letters mapped
    back in the words that use them, markdown emphasis and quote marks removed."""
    # Each step runs only where the text has what it maps (most text has none): a chunk costs a few
    # regex scans, not a Python call per word.
    folded = html.unescape(text) if "&" in text else text
    folded = _TAG_TEXT.sub(lambda m: "".join(chr(ord(ch) - 0xE0000) for ch in m.group()), folded)
    folded = strip_hidden(unicodedata.normalize("NFKC", folded))
    if not _LOOKS_LATIN.isdisjoint(folded):
        letters = [ch for ch in folded if ch.isalpha()]
        latin = sum("a" <= ch.lower() <= "z" for ch in letters) > len(letters) / 2
        folded = _WORD.sub(lambda m: _unmask_word(m.group(), latin), folded)
    if _LEET_MIX.search(folded):
        folded = _LEET_WORD.sub(lambda m: _unleet_word(m.group()), folded)
    return _MARKUP.sub("", folded)


def _rejoined(text: str) -> str:
    """Words split across lines joined again ("ign\\nore"); a view of its own, as it also joins lines."""
    return _SPLIT_WORD.sub("", text)


def _unspaced(text: str) -> str:
    """Letters spaced apart ("i g n o r e   a l l") closed up: in a run of six or more one-character
    tokens, single blanks are gaps between letters and longer ones between words."""
    return _SPACED_RUN.sub(lambda m: _WORD_GAP.sub(" ", _LETTER_GAP.sub("", m.group())), text)


def _decoded(text: str) -> list[str]:
    """What base64 runs in the text say, where it is text."""
    out = []
    for run in _BASE64.findall(text):
        try:
            plain = base64.b64decode(run + "=" * (-len(run) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        readable = sum(ch.isprintable() or ch.isspace() for ch in plain)
        if readable > 0.95 * len(plain) and re.search(r"[A-Za-z]{3}", plain):
            out.append(plain)
    return out


CACHED_CHARS = 2048
"""Texts up to this long have their views cached (each check of a rail asks for them): a cache of long
texts held megabytes per request (256 texts of 1 MiB with one emoji in them: 4 GiB)."""


def views(text: str) -> tuple[str, ...]:
    """`text`, then each reading of it that differs (see the module's docstring)."""
    return _cached_views(text) if len(text) <= CACHED_CHARS else _views(text)


@lru_cache(maxsize=256)
def _cached_views(text: str) -> tuple[str, ...]:
    return _views(text)


def _views(text: str) -> tuple[str, ...]:
    folded = fold(text)
    found = [text]
    for view in (folded, _rejoined(folded), _unspaced(folded), *map(fold, _decoded(html.unescape(text)))):
        if view not in found:
            found.append(view)
    return tuple(found)
