"""Read one file into a `ParsedDocument`: Markdown, plain text, reStructuredText, HTML and PDF.

`parse_file` checks the size, reads the bytes and dispatches on the suffix. Markdown is split at its
top-level headings with markdown-it (so `#` lines in code blocks stay code); each section keeps its
original Markdown, heading line included. Plain text and reStructuredText are one section each. HTML
(`loaders_html`) and PDF (`loaders_pdf`) live in their own modules, imported only when needed.

Text must be UTF-8 (a UTF-8 or UTF-16 byte-order mark is honoured). Other encodings are refused with
the byte offset of the first bad byte rather than guessed (charset-normalizer is not consulted): a
wrong guess indexes mojibake silently, and detection on short files is a coin toss between cp1252,
latin-1 and friends. NUL bytes mean binary content and are refused too.

Deliberately left out: reStructuredText heading structure (one section), Markdown front matter (a
leading `---` YAML block is dropped, not indexed), headings nested in lists or block quotes (they do
not start sections), and anything that needs the network.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

from indexer.types import ParsedDocument, Section

MAX_FILE_BYTES = 50 * 1024 * 1024
_MARKDOWN = frozenset({".md", ".markdown"})
_TEXT = frozenset({".txt", ".rst"})
_HTML = frozenset({".html", ".htm"})
_PDF = frozenset({".pdf"})
SUFFIXES: frozenset[str] = _MARKDOWN | _TEXT | _HTML | _PDF

# YAML front matter: a `---` line, then YAML whose first line is a key (or a comment), or nothing (Jekyll's
# empty front matter), then `---` or `...`. A first `---` followed by prose is a thematic break, not front
# matter: reading it as front matter dropped everything down to the next `---` line (a setext heading's).
_FRONT_MATTER = re.compile(
    r"\A---[ \t]*\n(?:(?:[ \t]*\#[^\n]*|[\w\"'][^\n:]*:(?:[ \t][^\n]*)?)\n(?:.*?\n)?)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)",
    re.DOTALL,
)


class ParseError(ValueError):
    """A problem with one file's content; the message says what is wrong and, where it can, what to do.

    Messages do not repeat the path: callers report it next to the message. Permission and other I/O
    problems are `OSError`s and are not translated.
    """


def parse_file(path: Path) -> ParsedDocument:
    """Parse `path` by its suffix. Raises `ParseError` for bad content, `OSError` when it cannot be read."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ParseError(f"unsupported file type {suffix or '(no suffix)'!r}; supported: {' '.join(sorted(SUFFIXES))}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ParseError(
            f"file is {size / 2**20:.1f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit; split it or leave it out"
        )
    data = path.read_bytes()
    if not data.strip():
        raise ParseError("empty: the file has no content (or only whitespace)")
    if suffix in _MARKDOWN:
        return parse_markdown(decode_text(data))
    if suffix in _TEXT:
        return _one_section("text", decode_text(data))
    if suffix in _HTML:
        from indexer.loaders_html import parse_html  # lazy: trafilatura takes ~0.2 s to import

        return parse_html(data)
    from indexer.loaders_pdf import parse_pdf

    return parse_pdf(data)


def decode_text(data: bytes, encoding: str | None = None) -> str:
    """Bytes to text with Unix newlines: UTF-8 unless a byte-order mark or `encoding` says otherwise.

    Refuses NUL characters (binary data in a text file) and undecodable bytes, naming the offset.
    """
    skip = 0
    if encoding is None:
        if data.startswith(codecs.BOM_UTF8):
            encoding, skip = "utf-8", len(codecs.BOM_UTF8)
        else:
            encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8"
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        encoding, skip = "utf-32", 0  # its BOM starts like UTF-16 LE's: checked first
    nul = -1 if encoding.startswith(("utf-16", "utf-32")) else data.find(b"\x00")
    if nul >= 0:  # checked before decoding: "binary" says more than "not UTF-8" for an image or archive
        head = data[:4096]
        odd, even = head[1::2], head[0::2]
        if len(head) >= 4 and (odd.count(0) > 0.9 * len(odd) or even.count(0) > 0.9 * len(even)):
            raise ParseError(
                "text in UTF-16 without a byte-order mark (every other byte is 0): re-save the file as UTF-8 "
                "(e.g. `iconv -f utf-16le -t utf-8`)"
            )
        raise ParseError(f"binary content: NUL byte at offset {nul}; this does not look like a text file")
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        at = exc.start + skip
        raise ParseError(
            f"not valid {encoding.upper()}: byte 0x{data[at : at + 1].hex()} at offset {at}; "
            "re-save the file as UTF-8 (e.g. `iconv -f cp1252 -t utf-8`, with its real source encoding)"
        ) from None
    except LookupError:
        raise ParseError(f"unknown text encoding {encoding!r}; re-save the file as UTF-8") from None
    if "\x00" in text:
        raise ParseError(f"binary content: NUL character at offset {text.index(chr(0))}; not a text file")
    if not text.strip():
        raise ParseError("empty: the file has no content (or only whitespace)")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_markdown(text: str, *, format: str = "markdown") -> ParsedDocument:
    """Split Markdown at top-level headings; each section is the source text from its heading on."""
    text = _FRONT_MATTER.sub("", text, count=1)
    # Split on "\n" only: that is what markdown-it's line map counts (str.splitlines also breaks on \f, \u2028...).
    lines = text.split("\n")
    tokens = MarkdownIt("commonmark").parse(text)
    sections: list[Section] = []
    trail: list[tuple[int, str]] = []
    start, heading = 0, ""
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open" or tok.level != 0 or tok.map is None:
            continue
        _add(sections, "\n".join(lines[start : tok.map[0]]), heading)
        level = int(tok.tag[1])
        trail = [(lv, t) for lv, t in trail if lv < level] + [(level, _inline_text(tokens[i + 1]))]
        start, heading = tok.map[0], " > ".join(t for _, t in trail if t)
    _add(sections, "\n".join(lines[start:]), heading)
    if not sections:
        raise ParseError("empty: no text left after removing front matter")
    return ParsedDocument(format=format, sections=tuple(sections))


def _inline_text(inline: Token) -> str:
    """A heading's plain text: `code` and link text kept, Markdown markup and inline HTML dropped."""
    parts = [
        " " if child.type.endswith("break") else child.content
        for child in inline.children or ()
        if child.type in ("text", "code_inline", "image", "softbreak", "hardbreak")
    ]
    return " ".join("".join(parts).split())


def _one_section(format: str, text: str) -> ParsedDocument:
    sections: list[Section] = []
    _add(sections, text, "")
    return ParsedDocument(format=format, sections=tuple(sections))


def _add(sections: list[Section], text: str, heading: str) -> None:
    text = text.strip()
    if text:
        sections.append(Section(text=text, heading=heading))
