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
dropped so the text matches what people type. Deliberately left out: OCR, passwords, reading order
beyond what the content stream gives (two-column pages come out column by column when the producer
wrote them so, which LaTeX and LibreOffice do), tables, images, annotations and attachments.
"""

from __future__ import annotations

import bisect
import io
import logging
import re
import threading
import unicodedata
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
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffe]")  # PDFium marks a hyphen it joined with U+FFFE
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
        texts = [_clean(text) for text in _page_texts(data, reader)]
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
