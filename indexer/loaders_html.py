"""HTML to heading sections: trafilatura finds the main text and writes it as Markdown, which
`loaders.parse_markdown` then splits at its headings.

trafilatura drops navigation, sidebars, headers, footers, cookie banners, scripts and styles, and keeps
headings, lists, tables and code blocks. On the 23 MkDocs pages of the HTTPX docs it keeps every
heading of the Markdown source and none of the menu. Two adjustments before it runs: elements that
are chrome by HTML semantics (`<nav>`, landmark roles, and headers, footers and asides outside any
article or main) are removed, so a page with no real text is refused instead of indexed as its menu;
and a page with no `<article>` or `<main>` gets its body wrapped in an `<article>`, because
trafilatura's fallback for such pages keeps paragraphs but loses headings (its boilerplate rules
still prune what is inside). A `<pre>`, with or without `<code>`, comes out as a fenced block of its
plain text (highlighting and line breaks from `<br>` resolved), blank lines included.

The bytes are decoded here, not guessed: a byte-order mark, else UTF-8, else the charset the page
declares in its first 4 KiB. Deliberately left out: links and image URLs (link text is kept), page
metadata (title, author, date), comments sections, and anything rendered by JavaScript. Nothing is
fetched: trafilatura only reads the tree it is given.
"""

from __future__ import annotations

import re
from copy import deepcopy
from functools import cache
from typing import Any

import lxml.html
import trafilatura
from trafilatura.settings import DEFAULT_CONFIG

from indexer.loaders import ParseError, decode_text, parse_markdown
from indexer.types import ParsedDocument

_DECLARED = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")
# Page chrome by HTML semantics, removed before trafilatura sees the page: otherwise a page with no real
# text falls back to "all the text there is", i.e. the menu. Headers, footers and asides inside an
# article or main are the article's own (a byline, a call-out) and are left to trafilatura.
_CHROME = (
    "//nav | //*[@role='navigation' or @role='search' or @role='banner' or @role='contentinfo']"
    " | //*[self::header or self::footer or self::aside][not(ancestor::article or ancestor::main)]"
)

# A heading's permalink (Sphinx's "headerlink", MkDocs' and Docusaurus' anchors): a link to the heading
# itself whose text is a mark, which would end every heading and citation label ("Setup¶").
_PERMALINKS = "//*[self::h1 or self::h2 or self::h3 or self::h4 or self::h5 or self::h6]//a[starts-with(@href, '#')]"
_PERMALINK_MARKS = frozenset({"", "¶", "#", "§", "🔗", "\u200b", "\ufeff"})

# trafilatura drops the blank lines of a code block, so each one goes in as a line of this mark (a
# control picture: printable, so trafilatura keeps it, and not a line anyone writes) and comes out blank.
_BLANK_MARK = "\u2420"
_BLANK_LINE = re.compile(r"^[ \t]*$", re.MULTILINE)
_MARKED_LINE = re.compile(f"^{_BLANK_MARK}$", re.MULTILINE)
_EDGE_BLANK_LINES = re.compile(r"\A(?:[ \t]*\n)+|(?:\n[ \t]*)+\Z")


def parse_html(data: bytes) -> ParsedDocument:
    text = _XML_DECLARATION.sub("", _decode(data))  # lxml refuses str input that declares an encoding
    try:
        tree = lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError) as exc:
        raise ParseError(f"cannot parse HTML: {exc}") from None
    for element in tree.xpath(_CHROME):
        element.drop_tree()
    for anchor in tree.xpath(_PERMALINKS):
        if anchor.text_content().strip() in _PERMALINK_MARKS:
            anchor.drop_tree()  # its tail text stays
    # trafilatura writes a <details> block's <summary> as a heading, which then files the text after the
    # block under it: it is the block's first paragraph.
    for summary in tree.iter("summary"):
        summary.tag = "p"
    # A list inside a table cell is dropped by trafilatura (the cell comes out empty): its items go in as
    # one paragraph, "one; two".
    for items in tree.xpath("//td//ul | //td//ol | //th//ul | //th//ol"):
        if items.getparent() is None:
            continue
        paragraph = lxml.html.Element("p")
        paragraph.text = "; ".join(" ".join(li.text_content().split()) for li in items.findall("li"))
        paragraph.tail = items.tail
        items.getparent().replace(items, paragraph)
    # A <pre> with no <code> in it came out as prose (lines run together or escaped as Markdown), and
    # blank lines were lost in any: its text goes in as one <code>, blank lines marked.
    for pre in tree.xpath("//pre[not(ancestor::pre)]"):
        for br in pre.iter("br"):
            br.tail = "\n" + (br.tail or "")
        code = lxml.html.Element("code")
        # ends in a line break, as MkDocs writes it: a one-line block is still a block, not inline code
        code.text = _BLANK_LINE.sub(_BLANK_MARK, _EDGE_BLANK_LINES.sub("", pre.text_content())) + "\n"
        del pre[:]
        pre.text = None
        pre.append(code)
    # trafilatura takes the first <article> as the main text: a page of several (a blog index, one per
    # API entry), or one with more content beside it inside <main>, lost the rest. Those become sections
    # of <main> (or of the body), which is then the main text.
    articles = tree.findall(".//article")
    main = tree.find(".//main")
    if (main is not None and main.find(".//article") is not None) or len(articles) > 1:
        for article in articles:
            article.tag = "section"
    body = tree.find("body")
    if body is not None and tree.find(".//article") is None and tree.find(".//main") is None:
        article = lxml.html.Element("article")
        article.text, body.text = body.text, None
        article.extend(list(body))
        body.append(article)
    markdown = trafilatura.extract(tree, **_options())
    if not markdown or not markdown.strip():
        raise ParseError("no main text found in the HTML (is the page empty, or rendered by JavaScript?)")
    return parse_markdown(_MARKED_LINE.sub("", markdown), format="html")


def _decode(data: bytes) -> str:
    """UTF-8 (or a BOM) first: a page that decodes as UTF-8 almost surely is, whatever it declares."""
    try:
        return decode_text(data)
    except ParseError:
        declared = _DECLARED.search(data[:4096])
        if declared is None:
            raise
        return decode_text(data, declared.group(1).decode("ascii").lower())


@cache
def _options() -> dict[str, Any]:
    config = deepcopy(DEFAULT_CONFIG)
    config.set("DEFAULT", "MIN_EXTRACTED_SIZE", "1")  # a short page is still a page (the default wants 250 chars)
    return {
        "output_format": "markdown",
        "include_formatting": True,  # headings as `#` lines, code as fences: what parse_markdown splits on
        "include_links": False,
        "include_images": False,
        "include_tables": True,
        "include_comments": False,
        "with_metadata": False,
        "deduplicate": False,  # a paragraph repeated within a page is content, not boilerplate
        "config": config,
    }
