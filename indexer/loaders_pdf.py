"""PDF to one section per page: the page's text layer, its 1-based number, and the outline (bookmark)
path in effect on it as the heading.

pypdf opens the file, decides about encryption and reads the outline; PDFium (pypdfium2) extracts the
text, about 20 times faster than pypdf (0.14 s against 2.9 s of CPU on a 117-page book), which matters
because parsing shares the cores with the embedder. PDFium gives right-to-left scripts in visual order,
so a page with Hebrew or Arabic in it is extracted again by pypdf, which keeps the logical order. An
encrypted file is read by pypdf alone. PDFium is not thread-safe: one lock serialises its calls.

An encrypted PDF is opened with the empty user password when that works (many are only "encrypted"
against editing); one that needs a real password is refused, as is a PDF with no text on any page (a
scan) and one pypdf cannot read. Ligatures (U+FB00-FB06) are spelled out and control characters
dropped so the text matches what people type.

PDFium joins a word broken at a line end ("Abbil-" + "dung") and marks the join with U+FFFE in place
of the hyphen, for a soft (hyphenation) and a hard (compound) hyphen alike: the glyph is the same
'-', so only the words can tell. The hyphen is kept when the part after the break starts with a
digit, or with a capital unless both parts are all capitals ("Schwarz-Weiß", "SNCF-Metrik",
"COVID-19": hyphenation does not split before a capital or a digit), or when the document writes the
hyphenated form on one line more often than the joined one ("well-known" elsewhere). Of the 79 joins
in the 13 sample PDFs, one keeps its hyphen ("Schwarz-Weiß"); the other 78 are hyphenation breaks.
Still wrong: a lower-case compound broken at its hyphen and written nowhere else on one line
("wellknown"), and a camel-case name hyphenated at its capital ("Java-Script").

Running headers and footers (a page number, "Page 3 of 117", "12 1.4. ZUSAMMENHANG") would end up in
chunks and citations. In a document of 4 pages or more, lines are peeled off the top and the bottom
of each page, 2 at most at each end, while they are running ones: a line that repeats, digits
aside, at the same end of half the pages or more (a bare number never counts so), or one (at most
per end) that starts or ends with the page's printed number, known from an offset between printed
numbers and page indexes that half the pages or more share. On the 117-page lecture notes that
drops 102 headers and nothing else: the chapter pages, which have none, keep their first line, and
a contents entry that starts with its page's number stays, as the line above it is no header; the
two 4-page LaTeX samples lose their 4 page numbers each. Each section keeps its page. Still
missed: roman page numbers ("iii"), headers that change with every section and carry no number.
Still wrong: a title on every page that carries the page's number ("Exercise 3" on page 3) goes.

Deliberately left out: OCR, passwords, reading order beyond what the content stream gives
(two-column pages come out column by column when the producer wrote them so, which LaTeX and
LibreOffice do), tables, images, annotations and attachments.
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pypdfium2 as pdfium
from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from indexer.loaders import ParseError
from indexer.types import ParsedDocument, Section

logger = logging.getLogger(__name__)

_LIGATURES = {cp: unicodedata.normalize("NFKC", chr(cp)) for cp in range(0xFB00, 0xFB07)}
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe]")  # a U+FFFE not between two words, too
_BROKEN = re.compile(r"[\w-]*\ufffe[\w\ufffe-]*")  # a word PDFium joined at a line end, with its marks
_WORD = re.compile(r"\w+(?:-\w+)*")
_DIGITS = re.compile(r"\d+")
_EDGE_NUMBER = re.compile(r"^(\d+)(?:\s|$)|\s(\d+)$")
_EDGE_LINES = 2  # how deep a running header or footer may sit at each end of a page
_MIN_PAGES = 4
# Hebrew, Arabic, Syriac, Thaana, NKo, Samaritan, Mandaic and their presentation forms.
_RIGHT_TO_LEFT = re.compile(r"[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefe]")
_PDFIUM = threading.Lock()


def parse_pdf(data: bytes) -> ParsedDocument:
    with _pdf_errors():
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise ParseError(
                "encrypted PDF: it needs a password to open; save a copy without the password "
                "(e.g. `qpdf --decrypt --password=PASSWORD in.pdf out.pdf`) and index that"
            )
        texts = _drop_running_lines([_clean(text) for text in _mend_hyphens(_page_texts(data, reader))])
        headings = _outline(reader)
    if not texts:
        raise ParseError("the PDF has no pages")
    starts = [page for page, _ in headings]
    sections = []
    for index, text in enumerate(texts):
        if text:
            at = bisect.bisect_right(starts, index) - 1
            sections.append(Section(text=text, heading=headings[at][1] if at >= 0 else "", page=index + 1))
    if not sections:
        raise ParseError(
            f"no text layer on any of its {len(texts)} pages (a scan or images only?); OCR is not supported: "
            "run it through an OCR tool first (e.g. `ocrmypdf in.pdf out.pdf`)"
        )
    return ParsedDocument(format="pdf", sections=tuple(sections))


@contextmanager
def _pdf_errors() -> Iterator[None]:
    """pypdf raises many kinds of error on damaged input (its own, and KeyError, ValueError, zlib.error...):
    all become one ParseError. The bytes are already in memory, so no OSError here is about the disk."""
    try:
        yield
    except (ParseError, MemoryError):
        raise
    except DependencyError as exc:
        raise ParseError(f"{exc}; install it with `pip install 'pypdf[crypto]'`") from None
    except Exception as exc:
        raise ParseError(f"cannot read the PDF, it may be damaged or truncated ({type(exc).__name__}: {exc})") from None


def _page_texts(data: bytes, reader: PdfReader) -> list[str]:
    with _PDFIUM:
        try:
            # A PDF encrypted against editing only (an empty user password, which pypdf has opened) opens
            # in PDFium too, which joins hyphenated line ends and reads ligatures as pypdf does not.
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError:
            if not reader.is_encrypted:
                raise
            return [page.extract_text() for page in reader.pages]
        try:
            texts = []
            for page in document:
                textpage = page.get_textpage()
                texts.append(textpage.get_text_range())
                textpage.close()
                page.close()
        finally:
            document.close()
    if len(texts) != len(reader.pages):
        raise ParseError(f"pypdf and PDFium disagree on the page count ({len(reader.pages)} against {len(texts)})")
    return [reader.pages[i].extract_text() if _RIGHT_TO_LEFT.search(text) else text for i, text in enumerate(texts)]


def _clean(text: str) -> str:
    return _CONTROL.sub("", text.translate(_LIGATURES).replace("\r\n", "\n").replace("\r", "\n")).strip()


def _mend_hyphens(texts: list[str]) -> list[str]:
    """Each U+FFFE between two words becomes a hyphen or nothing, by the rule in the module docstring."""
    if not any("\ufffe" in text for text in texts):
        return texts
    seen = Counter(w.casefold() for text in texts for w in _WORD.findall(_BROKEN.sub(" ", text)))

    def mend(match: re.Match[str]) -> str:
        word, *rest = match.group(0).split("\ufffe")
        for part in rest:
            last = word.rsplit("-", 1)[-1]
            if last and part:
                hard = part[0].isdigit() or (part[0].isupper() and not (last.isupper() and part.isupper()))
                if hard or seen[f"{word}-{part}".casefold()] > seen[f"{word}{part}".casefold()]:
                    word += "-"
            word += part
        return word

    return [_BROKEN.sub(mend, text) for text in texts]


def _drop_running_lines(texts: list[str]) -> list[str]:
    """The pages less their running headers and footers, by the rule in the module docstring."""
    if len(texts) < _MIN_PAGES:
        return texts
    need = max(3, math.ceil(len(texts) / 2))
    pages = [text.split("\n") for text in texts]
    filled = [[at for at, line in enumerate(lines) if line.strip()] for lines in pages]
    tops: Counter[str] = Counter()
    bottoms: Counter[str] = Counter()
    offsets: Counter[int] = Counter()
    for index, (lines, at) in enumerate(zip(pages, filled, strict=True)):
        head, foot = [lines[i] for i in at[:_EDGE_LINES]], [lines[i] for i in at[-_EDGE_LINES:]]
        tops.update({_masked(line) for line in head})
        bottoms.update({_masked(line) for line in foot})
        offsets.update({number - index for line in head + foot for number in _edge_numbers(line)})
    offset, numbered_pages = offsets.most_common(1)[0] if offsets else (0, 0)

    def running(edge: list[str], seen: Counter[str], index: int) -> int:
        """How many of the lines at one end of a page, outermost first, are running ones."""
        numbered = False
        for count, line in enumerate(edge):
            masked = _masked(line)
            if masked != "#" and seen[masked] >= need:  # a bare number must be the page's own
                continue
            # one line at each end may go for carrying the page's number; a second one is body text
            if numbered or numbered_pages < need or index + offset not in _edge_numbers(line):
                return count
            numbered = True
        return len(edge)

    kept = []
    for index, (lines, at) in enumerate(zip(pages, filled, strict=True)):
        top = running([lines[i] for i in at[:_EDGE_LINES]], tops, index)
        bottom = running([lines[i] for i in reversed(at[top:][-_EDGE_LINES:])], bottoms, index)
        body = at[top : len(at) - bottom]
        kept.append("\n".join(lines[body[0] : body[-1] + 1]) if body else "")
    return kept


def _masked(line: str) -> str:
    return _DIGITS.sub("#", " ".join(line.split()))


def _edge_numbers(line: str) -> set[int]:
    """The numbers a line starts or ends with: where a page number sits in a running header or footer."""
    return {int(n) for match in _EDGE_NUMBER.finditer(line.strip()) for n in match.groups() if n}


def _outline(reader: PdfReader) -> list[tuple[int, str]]:
    """(0-based start page, heading path) for each outline entry, sorted by page; [] when there is none.

    A page's heading is the last entry that starts on or before it. A broken outline is ignored: the
    text is what matters, and headings are a bonus.
    """
    found: list[tuple[int, str]] = []

    def walk(items: list[Any], trail: list[str]) -> None:
        last: str | None = None
        for item in items:
            if isinstance(item, list):  # children follow their parent entry
                walk(item, [*trail, last] if last is not None else trail)
                continue
            last = " ".join(str(item.title).split())
            page = reader.get_destination_page_number(item)
            if page is not None and page >= 0:
                found.append((page, " > ".join(t for t in (*trail, last) if t)))

    try:
        walk(reader.outline, [])
    except Exception as exc:  # a damaged outline must not cost the document its text
        logger.warning("ignoring an unreadable PDF outline: %s: %s", type(exc).__name__, exc)
        return []
    return sorted(found, key=lambda entry: entry[0])
