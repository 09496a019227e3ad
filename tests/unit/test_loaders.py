"""Loaders: sections, heading paths and pages per format, refusals with useful messages, and the real
HTTPX docs (Markdown vs MkDocs HTML) and sample PDFs from shared/data when they are there."""

from __future__ import annotations

import collections
import io
import json
import re
from pathlib import Path

import lxml.html
import pytest
from pypdf import PdfReader, PdfWriter

from indexer.loaders import MAX_FILE_BYTES, SUFFIXES, ParseError, parse_file
from indexer.types import SECTION_SEPARATOR, ParsedDocument

FIXTURES = Path(__file__).parents[1] / "fixtures" / "loaders"
DATA = Path(__file__).parents[2].parent / "shared" / "data" / "docs"


def well_formed(doc: ParsedDocument) -> None:
    assert doc.sections
    assert doc.text == SECTION_SEPARATOR.join(s.text for s in doc.sections)
    for s in doc.sections:
        assert s.text and s.text == s.text.strip() and "\r" not in s.text


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- Markdown and plain text -------------------------------------------------------------------------


def test_markdown_splits_at_headings_but_not_at_hashes_in_code() -> None:
    doc = parse_file(FIXTURES / "guide.md")
    well_formed(doc)
    assert doc.format == "markdown"
    assert [s.heading for s in doc.sections] == [
        "",
        "Quickstart",
        "Quickstart > Streaming Responses",
        "Quickstart > Streaming Responses > Back-pressure",
        "Configuration",
        "Configuration > The retry table",
    ]
    quickstart, streaming = doc.sections[1].text, doc.sections[2].text
    assert quickstart.startswith("# Quickstart\n") and "# not a heading: a comment" in quickstart
    assert streaming.startswith("## Streaming Responses\n") and "# not a heading either" in streaming
    assert doc.sections[4].text.startswith("Configuration\n=============")  # setext heading, source kept
    assert "> # A quoted heading" in doc.sections[5].text  # a heading in a block quote is not a section
    assert doc.sections[0].text == "Zorblax is a handshake protocol designed by Mira Okonkwo in 2019."
    assert "tags:" not in doc.text  # front matter dropped
    assert all(s.page is None for s in doc.sections)


def test_markdown_with_crlf_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "win.MD", b"\xef\xbb\xbfintro\r\n\r\n# A\r\nalpha\r\n## B\r\nbeta\r\n")
    doc = parse_file(path)
    well_formed(doc)
    assert [(s.heading, s.text) for s in doc.sections] == [("", "intro"), ("A", "# A\nalpha"), ("A > B", "## B\nbeta")]


@pytest.mark.parametrize("name", ["notes.txt", "notes.rst"])
def test_plain_text_and_rst_are_one_section(tmp_path: Path, name: str) -> None:
    doc = parse_file(write(tmp_path, name, "\n  Title\n=====\n\n# not markdown here\nbody text é\n\n".encode()))
    well_formed(doc)
    assert doc.format == "text"
    assert [(s.heading, s.page) for s in doc.sections] == [("", None)]
    assert doc.text == "Title\n=====\n\n# not markdown here\nbody text é"


def test_utf16_with_bom_is_decoded(tmp_path: Path) -> None:
    doc = parse_file(write(tmp_path, "u16.txt", "\ufeffZorblax über alles".encode("utf-16-le")))
    assert doc.text == "Zorblax über alles"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.md", b"", "empty"),
        ("blank.txt", b" \n\t\r\n  ", "empty"),
        ("blank16.txt", "\ufeff  \n".encode("utf-16-le"), "empty"),
        ("only-front-matter.md", b"---\ntitle: x\n---\n", "empty"),
        ("binary.md", b"# Title\n\x00\x01\x02\x89PNG", "NUL byte at offset 8"),
        ("latin1.txt", "caf\u00e9 au lait".encode("latin-1"), "not valid UTF-8: byte 0xe9 at offset 3"),
        ("bom.md", b"\xef\xbb\xbfab\xe9", "not valid UTF-8: byte 0xe9 at offset 5"),
        ("doc.docx", b"PK\x03\x04", "unsupported file type '.docx'"),
    ],
)
def test_bad_input_is_refused_with_a_reason(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=re.escape(message)):
        parse_file(write(tmp_path, name, data))


def test_non_utf8_message_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="re-save the file as UTF-8"):
        parse_file(write(tmp_path, "latin1.md", b"na\xefve"))


def test_oversized_file_is_refused_by_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk or memory spent
    with pytest.raises(ParseError, match="over the 50 MiB limit"):
        parse_file(path)


def test_io_errors_propagate_untranslated(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        parse_file(tmp_path / "missing.md")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(IsADirectoryError):
        parse_file(tmp_path / "folder.md")


def test_suffixes() -> None:
    assert frozenset({".md", ".markdown", ".txt", ".rst", ".html", ".htm", ".pdf"}) == SUFFIXES


# --- HTML --------------------------------------------------------------------------------------------


def test_html_keeps_the_article_and_drops_the_chrome() -> None:
    doc = parse_file(FIXTURES / "article.html")
    well_formed(doc)
    assert doc.format == "html"
    assert [s.heading for s in doc.sections] == [
        "Retry policies",
        "Retry policies > Budgets",
        "Retry policies > Budgets > Jitter",
        "Retry policies > Idempotency",
    ]
    assert doc.sections[1].text.startswith("## Budgets\n")
    assert 'backoff = "exponential"' in doc.sections[1].text  # code kept
    for noise in (
        "Pricing plans",
        "Installation guide",
        "Release changelog",
        "Copyright",
        "Privacy",
        "NOISE",
        "font-family",
    ):
        assert noise not in doc.text


def test_html_without_article_or_main_keeps_its_headings() -> None:
    doc = parse_file(FIXTURES / "bare.html")
    assert [s.heading for s in doc.sections] == ["Release notes", "Release notes > Upgrading"]
    assert "TLS 1.3" in doc.sections[0].text and "Rotate the client certificates" in doc.sections[1].text


def test_html_is_deterministic() -> None:
    assert parse_file(FIXTURES / "article.html") == parse_file(FIXTURES / "article.html")


def test_html_declared_charset_is_used_and_undeclared_bytes_refused(tmp_path: Path) -> None:
    body = "<p>Un café crème, s'il vous plaît, pour la réunion de Zorblax.</p>"
    declared = f'<html><head><meta charset="windows-1252"></head><body>{body}</body></html>'.encode("cp1252")
    assert "café crème" in parse_file(write(tmp_path, "fr.html", declared)).text
    with pytest.raises(ParseError, match="not valid UTF-8"):
        parse_file(write(tmp_path, "fr2.htm", f"<html><body>{body}</body></html>".encode("cp1252")))


def test_html_with_no_main_text_is_refused(tmp_path: Path) -> None:
    page = b"<html><head><script>var x = 1;</script></head><body><nav><a href='/'>Home</a></nav></body></html>"
    with pytest.raises(ParseError, match="no main text"):
        parse_file(write(tmp_path, "shell.html", page))


# --- PDF ---------------------------------------------------------------------------------------------


def test_pdf_pages_and_outline_headings() -> None:
    doc = parse_file(FIXTURES / "outline.pdf")
    well_formed(doc)
    assert doc.format == "pdf"
    # Page 2 is blank: no section, and the other pages keep their numbers.
    assert [(s.page, s.heading) for s in doc.sections] == [(1, "Overview"), (3, "Protocol > Retry budgets")]
    assert doc.sections[0].text.startswith("Zorblax handshake overview.")
    assert "Retry budgets for the Zorblax protocol." in doc.sections[1].text


def test_image_only_pdf_needs_ocr() -> None:
    with pytest.raises(ParseError, match="no text layer.*OCR is not supported"):
        parse_file(FIXTURES / "scanned.pdf")


@pytest.mark.parametrize("cut", [0.5, 0.1])
def test_truncated_pdf_is_refused(tmp_path: Path, cut: float) -> None:
    data = (FIXTURES / "outline.pdf").read_bytes()
    with pytest.raises(ParseError, match="damaged or truncated"):
        parse_file(write(tmp_path, "cut.pdf", data[: int(len(data) * cut)]))


def _encrypted(user_password: str) -> bytes:
    writer = PdfWriter(clone_from=FIXTURES / "outline.pdf")
    writer.encrypt(user_password=user_password, owner_password="owner-secret", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_encrypted_pdf_opens_with_the_empty_password(tmp_path: Path) -> None:
    doc = parse_file(write(tmp_path, "locked-for-editing.pdf", _encrypted("")))
    assert [s.page for s in doc.sections] == [1, 3]


def test_encrypted_pdf_with_a_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ParseError, match="encrypted PDF: it needs a password"):
        parse_file(write(tmp_path, "locked.pdf", _encrypted("s3cret")))


# --- Real documents in shared/data (skipped when absent) ---------------------------------------------

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is not there")


def _httpx_pairs() -> list[tuple[Path, Path]]:
    html_root = DATA / "httpx_html"
    pairs = []
    for page in sorted(html_root.rglob("index.html")):
        rel = page.parent.relative_to(html_root).as_posix()
        pairs.append((DATA / "httpx_md" / ("index.md" if rel == "." else f"{rel}.md"), page))
    return pairs


def _words(text: str) -> collections.Counter[str]:
    return collections.Counter(w.lower() for w in re.findall(r"[A-Za-z]{3,}", text))


@needs_data
def test_mkdocs_html_matches_its_markdown_source() -> None:
    pairs = _httpx_pairs()
    assert len(pairs) == 23
    for md_path, html_path in pairs:
        md, html = parse_file(md_path), parse_file(html_path)
        well_formed(html)
        # Every heading of the source is a heading of the page (the page adds its title as an <h1>).
        page_headings = {h.split(" > ")[-1] for h in (s.heading for s in html.sections)}
        assert {s.heading.split(" > ")[-1] for s in md.sections if s.heading} <= page_headings, html_path
        # No navigation: menu entries that are not in this page's source or article text are absent.
        tree = lxml.html.parse(str(html_path)).getroot()
        article = " ".join(tree.find(".//article").text_content().split())
        source = md_path.read_text()
        menu = {" ".join(a.text_content().split()) for a in tree.iterfind(".//nav//a")}
        leaked = {m for m in menu if m and m not in source and m not in article and m in html.text}
        assert not leaked, (html_path, leaked)
        for chrome in ("Initializing search", "Table of contents", "Made with", "Material for MkDocs"):
            assert chrome not in html.text, (html_path, chrome)
        # Same prose: the source's words (less inline HTML, link targets, autodoc directives) are in the page.
        prose = re.sub(r"<[^>]+>|\]\([^)]*\)|^\s*(?::::|:docstring:|```).*$", " ", source, flags=re.MULTILINE)
        want, got = _words(prose), _words(html.text)
        assert sum((want & got).values()) >= 0.85 * sum(want.values()), html_path


@pytest.fixture(scope="module")
def geotopo() -> ParsedDocument:
    path = DATA / "pdf" / "GeoTopo-komprimiert.pdf"
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    return parse_file(path)


def test_long_pdf_has_one_section_per_page_with_chapter_headings(geotopo: ParsedDocument) -> None:
    well_formed(geotopo)
    assert [s.page for s in geotopo.sections] == list(range(1, 118))
    pages = {s.page: s for s in geotopo.sections}
    assert pages[6].heading == "1 Topologische Grundbegriffe > 1.1 Topologische Räume"
    assert pages[117].heading == "Stichwortverzeichnis"
    assert "Grundbegriffe" in pages[4].text and "\ufb00" not in geotopo.text  # ligature spelled out
    # PDFium joins a word hyphenated at a line end and marks the join with U+FFFE, which is dropped.
    assert "Tetraeders" in pages[40].text and "\ufffe" not in geotopo.text
    assert len(geotopo.text) > 100_000


@needs_data
def test_sample_pdfs() -> None:
    meta = {Path(f["path"]).name: f for f in json.loads((DATA / "pdf" / "files.json").read_text())["data"]}
    for path in sorted((DATA / "pdf").glob("*.pdf")):
        if path.name in ("GeoTopo-komprimiert.pdf", "libreoffice-writer-password.pdf"):
            continue
        doc = parse_file(path)
        well_formed(doc)
        assert all(1 <= (s.page or 0) <= meta[path.name]["pages"] for s in doc.sections), path
    assert "حَبيبي" in parse_file(DATA / "pdf" / "habibi.pdf").text
    columns = parse_file(DATA / "pdf" / "multicolumn.pdf")
    assert [s.page for s in columns.sections] == [1, 2, 3] and "Lorem ipsum dolor sit amet" in columns.text


@needs_data
def test_password_protected_sample_pdf_is_refused() -> None:
    path = DATA / "pdf" / "libreoffice-writer-password.pdf"
    assert PdfReader(path).is_encrypted
    with pytest.raises(ParseError, match=r"encrypted PDF: it needs a password .*qpdf --decrypt"):
        parse_file(path)


def test_pdfs_parse_the_same_from_many_threads() -> None:
    """The indexer parses in worker threads and PDFium is not thread-safe: its calls are serialised."""
    from concurrent.futures import ThreadPoolExecutor

    alone = parse_file(FIXTURES / "outline.pdf")
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda _: parse_file(FIXTURES / "outline.pdf"), range(32)))
    assert all(doc == alone for doc in together)


def test_a_leading_thematic_break_is_not_front_matter(tmp_path: Path) -> None:
    """A first `---` followed by prose was read as front matter, dropping everything down to the next `---`
    line (here a setext heading's underline): the intro and the whole Setup section were lost."""
    page = tmp_path / "page.md"
    page.write_text("---\n\nIntro paragraph with a thematic break above.\n\n## Setup\n\nDo this.\n\nMore\n---\n\nend\n")
    text = parse_file(page).text
    assert "Intro paragraph" in text and "Do this." in text and "end" in text
    empty = tmp_path / "jekyll.md"
    empty.write_text("---\n---\n# Title\n\nBody text.\n")
    doc = parse_file(empty)
    assert [s.heading for s in doc.sections] == ["Title"] and "---" not in doc.text


def test_html_heading_permalinks_are_dropped(tmp_path: Path) -> None:
    """Sphinx and MkDocs put a "¶" link in every heading: it ended every heading path and citation label."""
    page = tmp_path / "sphinx.html"
    page.write_text(
        '<html><body><main><h1>Guide<a class="headerlink" href="#guide">¶</a></h1><p>Intro text.</p>'
        '<h2>Setup<a class="headerlink" href="#setup">¶</a></h2><p>See <a href="#setup">setup</a> below.</p>'
        "</main></body></html>",
        encoding="utf-8",
    )
    doc = parse_file(page)
    assert [s.heading for s in doc.sections] == ["Guide", "Guide > Setup"] and "¶" not in doc.text
    assert "See setup below." in doc.text, "a link in the text keeps its words"


def test_html_keeps_every_article_and_lists_in_table_cells(tmp_path: Path) -> None:
    """trafilatura keeps only the first <article> (a blog index lost every post but one; content beside
    the article inside <main> was lost too) and empties a table cell that holds a list."""
    page = tmp_path / "index.html"
    page.write_text(
        "<html><body><main><article><h2>Post one</h2><p>Alpha text.</p></article>"
        "<article><h2>Post two</h2><p>Beta text.</p></article>"
        "<section><h2>Options</h2><table><tr><th>name</th><th>values</th></tr>"
        "<tr><td>mode</td><td><ul><li>dense</li><li>hybrid</li></ul></td></tr></table></section>"
        "</main></body></html>",
        encoding="utf-8",
    )
    doc = parse_file(page)
    assert [s.heading for s in doc.sections] == ["Post one", "Post two", "Options"]
    assert "| mode | dense; hybrid |" in doc.text


@needs_data
def test_a_pdf_encrypted_against_editing_reads_as_it_does_unencrypted(tmp_path: Path) -> None:
    """pypdf read such PDFs itself, PDFium the rest: the German lecture notes came out with 46 hyphenated
    line ends unjoined ("Abbil-\ndung") and words split differently."""
    original = DATA / "pdf" / "GeoTopo-komprimiert.pdf"
    writer = PdfWriter(clone_from=original)
    writer.encrypt(user_password="", owner_password="owner-secret", algorithm="AES-128")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as out:
        writer.write(out)
    assert PdfReader(locked).is_encrypted
    assert parse_file(locked).text == parse_file(original).text


def test_utf16_without_a_bom_and_utf32_are_told_apart_from_binary(tmp_path: Path) -> None:
    """UTF-16 without a byte-order mark was called binary, and UTF-32 with one was read as UTF-16."""
    no_bom = tmp_path / "notes.txt"
    no_bom.write_bytes("Plain notes, saved by an old editor.".encode("utf-16-le"))
    with pytest.raises(ParseError, match="UTF-16 without a byte-order mark.*re-save the file as UTF-8"):
        parse_file(no_bom)
    wide = tmp_path / "wide.txt"
    wide.write_bytes("Notes in UTF-32.".encode("utf-32"))
    assert parse_file(wide).text == "Notes in UTF-32."


def test_html_details_summary_is_a_paragraph_not_a_heading(tmp_path: Path) -> None:
    page = tmp_path / "faq.html"
    page.write_text(
        "<html><body><main><h2>Intro</h2><p>First.</p><details><summary>Show more</summary>"
        "<p>Hidden detail.</p></details><p>Last.</p></main></body></html>",
        encoding="utf-8",
    )
    doc = parse_file(page)
    assert [s.heading for s in doc.sections] == ["Intro"] and "Show more" in doc.text and "Last." in doc.text


def _pdf(pages: list[list[str]]) -> bytes:
    """A PDF written by hand: a page per list, each string (no parentheses or backslashes) a line of
    Helvetica, top down."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", font]
    for lines in pages:
        shown = "".join(f"({line}) Tj 0 -14 Td " for line in lines)
        content = f"BT /F1 11 Tf 72 720 Td {shown}ET".encode("cp1252")
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
            b" /Resources << /Font << /F1 3 0 R >> >> >>" % len(objects)
        )
    kids = " ".join(f"{number} 0 R" for number in range(5, len(objects) + 1, 2))
    objects[1] = f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_pdf_keeps_real_hyphens_at_line_ends(tmp_path: Path) -> None:
    """PDFium marks every hyphen it joins at a line end with U+FFFE, a compound's as a hyphenation
    break's, and all were dropped: "well-known" that broke at its hyphen came out "wellknown"."""
    lines = [
        "The well-known rule holds, and so it does for",
        "every well-",
        "known case: an exam-",
        "ple of a Schwarz-",
        "Weiß page from the COVID-",
        "19 years.",
    ]
    text = parse_file(write(tmp_path, "hyphens.pdf", _pdf([lines]))).text
    assert "every well-known case: an example of a Schwarz-Weiß page from the COVID-19 years." in text


def test_pdf_running_headers_and_footers_are_dropped(tmp_path: Path) -> None:
    """Running headers, footers and page numbers repeat on every page and ended up in chunks and citations."""
    bodies = [
        ["Zorblax handbook", "A handshake protocol in five pages."],
        ["Retry budgets cap how often a client may retry.", "Each budget refills over time."],
        ["Budgets are kept per host.", "A host that fails often loses its budget."],
        ["3 retries are the default budget.", "Jitter spreads the retries out."],
        ["Idempotent requests may always be retried.", "Others only with a key."],
    ]
    titles = ["", "1.1. RETRY BUDGETS", "1.1. RETRY BUDGETS", "1.2. JITTER", "1.3. IDEMPOTENCY"]
    pages = [
        body if index == 0 else [f"{index} {titles[index]}", *body, f"Zorblax draft {index + 1}/5"]
        for index, body in enumerate(bodies)
    ]
    doc = parse_file(write(tmp_path, "handbook.pdf", _pdf(pages)))
    assert [(s.page, s.text) for s in doc.sections] == [(n, "\n".join(body)) for n, body in enumerate(bodies, 1)]
    # Too few pages to tell a running line from body text: nothing is dropped.
    short = parse_file(write(tmp_path, "short.pdf", _pdf(pages[1:4]))).text
    assert "1 1.1. RETRY BUDGETS" in short and "Zorblax draft 4/5" in short


@pytest.mark.parametrize("code", [False, True])
def test_html_pre_keeps_its_blank_lines(tmp_path: Path, code: bool) -> None:
    """trafilatura dropped the blank lines of a code block, and wrote a <pre> with no <code> in it as
    prose: Markdown escapes added, and a "# comment" line in it became a heading."""
    block = "pip install zorblax\n\n# then check *it*\n\n\nzorblax --version"
    pre = f"<pre><code>{block}</code></pre>" if code else f"<pre>{block}</pre>"
    page = write(
        tmp_path,
        "setup.html",
        f"<html><body><main><h2>Setup</h2><p>Run:</p>{pre}<p>Done.</p></main></body></html>".encode(),
    )
    doc = parse_file(page)
    assert [s.heading for s in doc.sections] == ["Setup"]
    assert f"```\n{block}\n```" in doc.text
