"""Turn a file's bytes into a title, metadata and sections of plain text.

One parser per file type, chosen by extension through PARSERS (no if-chains).
Markdown keeps its heading path per section and Obsidian front matter as
metadata; HTML and .docx keep their headings too; PDF sections are pages.
Anything that cannot be read as the type it claims raises ParseError with the
reason and what to do, so the batch reports that file and goes on.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Callable

import yaml

from rag.archive_check import ArchiveRefused, check_zip


class ParseError(Exception):
    """This file cannot be ingested; the message says why and what to do."""


@dataclass
class Section:
    heading_path: str
    text: str


@dataclass
class ParsedDocument:
    title: str
    sections: list[Section]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


FRONT_MATTER_RE = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) or BOM-marked UTF-16; anything else is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"broken UTF-16 text ({exc.reason})") from None
    if b"\x00" in data[:8192]:
        raise ParseError("binary content, not text (a renamed file?); convert it to text or remove it")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"not UTF-8 text (byte {exc.start}); convert it, e.g. `iconv -f cp1251 -t utf-8 FILE`") from None


def _jsonable(value: Any) -> Any:
    # YAML gives dates and other objects; metadata goes into JSON payloads.
    return json.loads(json.dumps(value, default=str, ensure_ascii=False))


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = FRONT_MATTER_RE.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        # A broken header is kept as text rather than failing the whole note.
        return {}, text
    if not isinstance(meta, dict):
        return {}, text[match.end():]
    return _jsonable(meta), text[match.end():]


def markdown_sections(body: str) -> tuple[list[Section], str | None]:
    """Sections split at headings and the first H1, if any.

    Parsed with markdown-it-py (CommonMark): ATX and setext headings, ``` and ~~~
    fences (a `#` line inside a fence is code, not a heading), indented code. Each
    section's text is the source Markdown of its top-level blocks, as written."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(body)
    source = body.splitlines()
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    blocks: list[str] = []
    first_h1: str | None = None

    def flush() -> None:
        text = "\n\n".join(blocks).strip()
        if text:
            sections.append(Section(heading_path=" > ".join(t for _, t in path), text=text))
        blocks.clear()

    for i, token in enumerate(tokens):
        if token.level != 0 or token.map is None or token.nesting == -1:
            continue
        if token.type == "heading_open":
            flush()
            level, title = int(token.tag[1]), tokens[i + 1].content.strip()
            if level == 1 and first_h1 is None:
                first_h1 = title
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, title)]
        else:
            first, last = token.map
            blocks.append("\n".join(source[first:last]).strip("\n"))
    flush()
    return sections, first_h1


def parse_markdown(data: bytes, name: str) -> ParsedDocument:
    meta, body = split_front_matter(decode_text(data))
    sections, h1 = markdown_sections(body)
    title = str(meta.get("title") or h1 or PurePath(name).stem)
    return ParsedDocument(title=title, sections=sections, meta=meta)


def parse_text(data: bytes, name: str) -> ParsedDocument:
    text = decode_text(data).strip()
    return ParsedDocument(title=PurePath(name).stem, sections=[Section("", text)] if text else [])


def parse_pdf(data: bytes, name: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    if not data.lstrip()[:5].startswith(b"%PDF"):
        raise ParseError("not a PDF (no %PDF header); the file is damaged or misnamed")
    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata or {}
        title = str(info.get("/Title") or "").strip()
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ParseError(f"damaged PDF ({exc.__class__.__name__}: {exc}); re-export or repair it") from None
    sections = [Section(f"page {i}", text) for i, text in enumerate(pages, start=1) if text]
    if pages and not sections:
        raise ParseError("the PDF has no extractable text (a scan?); run OCR on it first")
    return ParsedDocument(title=title or PurePath(name).stem, sections=sections, meta={"pages": len(pages)})


def parse_docx(data: bytes, name: str) -> ParsedDocument:
    import docx  # python-docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        check_zip(data, name)  # before anything inflates: member count and unpacked size
    except ArchiveRefused as exc:
        raise ParseError(str(exc)) from None
    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, KeyError, ValueError, OSError) as exc:
        raise ParseError(f"not a readable .docx ({exc.__class__.__name__}); re-save it from the editor") from None
    except Exception as exc:  # zipfile.BadZipFile and lxml errors for damaged files
        raise ParseError(f"damaged .docx ({exc.__class__.__name__}: {exc})") from None
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    first_h1: str | None = None

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text:
            sections.append(Section(" > ".join(t for _, t in path), text))
        lines.clear()

    for para in document.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        level_match = re.match(r"Heading (\d)", style)
        if level_match and para.text.strip():
            flush()
            level = int(level_match.group(1))
            if level == 1 and first_h1 is None:
                first_h1 = para.text.strip()
            path = [(lvl, t) for lvl, t in path if lvl < level] + [(level, para.text.strip())]
        else:
            lines.append(para.text)
    flush()
    title = (document.core_properties.title or "").strip() or first_h1 or PurePath(name).stem
    return ParsedDocument(title=title, sections=sections)


def parse_html(data: bytes, name: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decode_text(data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    # Re-express headings as Markdown so one section splitter serves both formats.
    for level in range(1, 7):
        for heading in soup.find_all(f"h{level}"):
            heading.replace_with(f"\n{'#' * level} {heading.get_text(' ', strip=True)}\n")
    body = soup.body or soup
    text = re.sub(r"\n{3,}", "\n\n", body.get_text("\n"))
    sections, h1 = markdown_sections(text)
    return ParsedDocument(title=title or h1 or PurePath(name).stem, sections=sections)


Parser = Callable[[bytes, str], ParsedDocument]

PARSERS: dict[str, Parser] = {
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".txt": parse_text,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
    ".html": parse_html,
    ".htm": parse_html,
}


def parse_file(data: bytes, name: str) -> ParsedDocument:
    """Parse by extension; raises ParseError for unsupported, unreadable or empty files."""
    ext = PurePath(name).suffix.lower()
    parser = PARSERS.get(ext)
    if parser is None:
        raise ParseError(f"unsupported file type '{ext or '(none)'}'; supported: {', '.join(sorted(PARSERS))}")
    if not data.strip():
        raise ParseError("the file is empty")
    document = parser(data, name)
    if not any(s.text.strip() for s in document.sections):
        raise ParseError("no text in the file")
    return document
