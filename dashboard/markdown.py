"""A small, safe Markdown to HTML renderer for `resources.md`.

It knows what the learnings file uses: ATX headings, paragraphs, bullet and numbered lists (nested
by indentation), fenced code blocks, block quotes, horizontal rules, GitHub-style pipe tables, and
inline code, **strong**, *emphasis*, ~~strike~~, links and <autolinks>. It is not CommonMark; it is
meant to be predictable and safe:

- every piece of text is HTML-escaped: raw HTML in the source is shown as text, never interpreted
  (HTML comments are dropped; well-formed character references such as `&lt;` show their character);
- a link keeps its target only when the scheme is http, https or mailto, or it is relative or an
  anchor (javascript:, data:, vbscript: and the like become plain text);
- images are rendered as links, so the page never loads anything from the network at view time.

`render(text, autolink=None)`: `autolink(escaped_text) -> html` may turn words in plain text and in
code spans into links (the dashboard links experiment ids to their rows); it receives and must
return escaped HTML.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_SAFE_SCHEMES = ("http:", "https:", "mailto:")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_HR = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_LIST_ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$")
_TABLE_SEP = re.compile(r"^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$")
_QUOTE = re.compile(r"^ {0,3}> ?(.*)$")

_ENTITY = re.compile(r"&amp;([a-zA-Z][a-zA-Z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6});")
_COMMENT = re.compile(r"<!--.*?-->", re.S)

Autolink = Callable[[str], str]


def escape(text: str) -> str:
    return html.escape(text, quote=True)


def safe_url(url: str) -> str | None:
    """The URL if it is safe to put in an href, else None."""
    url = url.strip()
    if not url:
        return None
    # browsers ignore control characters and whitespace inside a scheme: strip them before checking
    probe = re.sub(r"[\x00-\x20\x7f]+", "", url).lower()
    m = re.match(r"^([a-z][a-z0-9+.-]*):", probe)
    if m is None:
        return url  # relative path, anchor or query: no scheme to abuse
    if probe.startswith(_SAFE_SCHEMES):
        return url
    return None


def slugify(text: str) -> str:
    slug = re.sub(r"[^\w\- ]+", "", text.lower()).strip().replace(" ", "-")
    return re.sub(r"-{2,}", "-", slug) or "section"


# --- inline ---------------------------------------------------------------------------------------

_INLINE = re.compile(
    r"(?P<code>`+)(?P<codebody>.+?)(?P=code)"
    r"|(?P<img>!)?\[(?P<ltext>(?:[^\[\]]|\[[^\[\]]*\])*)\]\((?P<lurl><[^>]*>|(?:[^\s()]|\([^\s()]*\))*)(?:\s+\"(?P<ltitle>[^\"]*)\")?\)"
    r"|<(?P<auto>(?:https?://|mailto:)[^\s<>]+)>"
    r"|(?P<bare>\bhttps?://[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"*_~])"
    r"|(?P<strong>\*\*|__)(?=\S)(?P<strongbody>.+?)(?<=\S)(?P=strong)"
    r"|(?P<em>[*_])(?=\S)(?P<embody>.+?)(?<=\S)(?P=em)(?!\w)"
    r"|~~(?=\S)(?P<delbody>.+?)(?<=\S)~~"
    r"|\\(?P<esc>[\\`*_{}\[\]()#+\-.!|~<>\"'])"
    r"|(?P<br> {2,}\n|\\\n)",
    re.S,
)


def _link(text_html: str, url: str, title: str | None = None) -> str:
    target = safe_url(url)
    if target is None:
        return text_html
    t = f' title="{escape(title)}"' if title else ""
    ext = ' rel="noopener noreferrer"' if re.match(r"(?i)https?:", target) else ""
    return f'<a href="{escape(target)}"{t}{ext}>{text_html}</a>'


def inline(text: str, autolink: Autolink | None = None) -> str:
    """Render one block's inline Markdown to HTML; all text is escaped."""
    out: list[str] = []
    pos = 0

    def plain(s: str) -> str:
        e = _ENTITY.sub(r"&\1;", escape(s))  # a well-formed entity (&lt; &#8594;) shows its character
        return autolink(e) if autolink else e

    for m in _INLINE.finditer(text):
        # an underscore inside a word (snake_case) is not emphasis
        if m.group("em") == "_" and m.start() > 0 and text[m.start() - 1].isalnum():
            continue
        out.append(plain(text[pos : m.start()]))
        pos = m.end()
        if m.group("code"):
            body = m.group("codebody")
            if body.startswith(" ") and body.endswith(" ") and body.strip():
                body = body[1:-1]
            code = escape(body)
            out.append(f"<code>{autolink(code) if autolink else code}</code>")
        elif m.group("ltext") is not None:
            url = m.group("lurl") or ""
            if url.startswith("<") and url.endswith(">"):
                url = url[1:-1]
            label = inline(m.group("ltext"), None)
            if m.group("img"):
                label = label or escape(url)
            out.append(_link(label, url, m.group("ltitle")))
        elif m.group("auto"):
            out.append(_link(escape(m.group("auto")), m.group("auto")))
        elif m.group("bare"):
            out.append(_link(escape(m.group("bare")), m.group("bare")))
        elif m.group("strong"):
            out.append(f"<strong>{inline(m.group('strongbody'), autolink)}</strong>")
        elif m.group("em"):
            out.append(f"<em>{inline(m.group('embody'), autolink)}</em>")
        elif m.group("delbody") is not None:
            out.append(f"<del>{inline(m.group('delbody'), autolink)}</del>")
        elif m.group("esc") is not None:
            out.append(escape(m.group("esc")))
        elif m.group("br") is not None:
            out.append("<br>\n")
    out.append(plain(text[pos:]))
    return "".join(out)


# --- blocks ---------------------------------------------------------------------------------------


def _split_row(line: str) -> list[str]:
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    cells, cur, i = [], [], 0
    while i < len(s):
        if s[i] == "\\" and i + 1 < len(s) and s[i + 1] == "|":
            cur.append("|")
            i += 2
            continue
        if s[i] == "|":
            cells.append("".join(cur).strip())
            cur = []
        else:
            cur.append(s[i])
        i += 1
    cells.append("".join(cur).strip())
    return cells


def _table(lines: list[str], autolink: Autolink | None) -> str:
    header = _split_row(lines[0])
    aligns = []
    for cell in _split_row(lines[1]):
        c = cell.strip()
        aligns.append(
            "center"
            if c.startswith(":") and c.endswith(":")
            else "right"
            if c.endswith(":")
            else "left"
            if c.startswith(":")
            else None
        )

    def cell(tag: str, text: str, i: int) -> str:
        a = aligns[i] if i < len(aligns) else None
        cls = f' class="align-{a}"' if a else ""
        return f"<{tag}{cls}>{inline(text, autolink)}</{tag}>"

    out = ['<div class="table-wrap"><table>', "<thead><tr>"]
    out += [cell("th", h, i) for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for line in lines[2:]:
        cells = _split_row(line)
        cells = (cells + [""] * len(header))[: len(header)]
        out.append("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(cells)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _list(lines: list[str], autolink: Autolink | None) -> str:
    """A list starting at lines[0]; nested lists are items indented deeper than their parent."""
    first = _LIST_ITEM.match(lines[0])
    assert first is not None
    base = len(first.group(1))
    ordered = first.group(2)[0].isdigit()
    items: list[list[str]] = []
    for line in lines:
        m = _LIST_ITEM.match(line)
        if m and len(m.group(1)) <= base + 1 and m.group(2)[0].isdigit() == ordered:
            items.append([m.group(3) or ""])
        else:
            items[-1].append(line)
    start = ""
    if ordered:
        n = int(first.group(2)[:-1])
        start = f' start="{n}"' if n != 1 else ""
    out = [f"<ol{start}>" if ordered else "<ul>"]
    for item in items:
        head, rest = item[0], item[1:]
        # continuation lines belong to the item's text until a nested list or block begins
        text = [head]
        while (
            rest and rest[0].strip() and not _LIST_ITEM.match(rest[0]) and not _FENCE.match(rest[0].strip())
        ):
            text.append(rest.pop(0).strip())
        task = re.match(r"^\[([ xX])\]\s+(.*)$", " ".join(text), re.S)
        if task:
            box = "&#x2611;" if task.group(1).lower() == "x" else "&#x2610;"
            body = f'<span class="task" aria-hidden="true">{box}</span> ' + inline(task.group(2), autolink)
        else:
            body = inline("\n".join(text), autolink)
        if rest:
            pad = min((_indent(x) for x in rest if x.strip()), default=0)
            body += _blocks([x[pad:] if len(x) >= pad else x.lstrip() for x in rest], autolink)
        out.append(f"<li>{body}</li>")
    out.append("</ol>" if ordered else "</ul>")
    return "".join(out)


def _blocks(lines: list[str], autolink: Autolink | None, used_ids: set[str] | None = None) -> str:
    used_ids = used_ids if used_ids is not None else set()
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            marker, lang = fence.group(1), fence.group(2)
            body = []
            i += 1
            while i < n and not lines[i].strip().startswith(marker):
                body.append(lines[i])
                i += 1
            i += 1  # the closing fence (or the end of the text)
            cls = f' class="language-{escape(lang)}"' if lang else ""
            out.append(f"<pre><code{cls}>{escape(chr(10).join(body))}</code></pre>")
            continue
        heading = _HEADING.match(line)
        if heading:
            level = len(heading.group(1))
            text = heading.group(2) or ""
            slug = base = slugify(re.sub(r"[`*_~\[\]]|\(.*?\)", "", text))
            k = 1
            while slug in used_ids:
                k += 1
                slug = f"{base}-{k}"
            used_ids.add(slug)
            out.append(f'<h{level} id="md-{escape(slug)}">{inline(text, autolink)}</h{level}>')
            i += 1
            continue
        if _HR.match(line):
            out.append("<hr>")
            i += 1
            continue
        if _QUOTE.match(line):
            body = []
            while i < n and lines[i].strip() and (_QUOTE.match(lines[i]) or body):
                q = _QUOTE.match(lines[i])
                body.append(q.group(1) if q else lines[i])
                i += 1
            out.append(f"<blockquote>{_blocks(body, autolink, used_ids)}</blockquote>")
            continue
        if "|" in line and i + 1 < n and _TABLE_SEP.match(lines[i + 1]) and lines[i + 1].count("-"):
            rows = [line, lines[i + 1]]
            i += 2
            while i < n and lines[i].strip() and "|" in lines[i]:
                rows.append(lines[i])
                i += 1
            out.append(_table(rows, autolink))
            continue
        item = _LIST_ITEM.match(line)
        if (
            item
            and (item.group(3) or "").strip() != ""
            or (item and i + 1 < n and lines[i + 1].startswith(" "))
        ):
            base = _indent(line)
            ordered = item.group(2)[0].isdigit()
            block = [line]
            i += 1
            while i < n:
                cur = lines[i]
                other = _LIST_ITEM.match(cur)
                if other and _indent(cur) <= base and other.group(2)[0].isdigit() != ordered:
                    break  # a list of the other kind starts a new list
                if not cur.strip():
                    # a blank line ends the list unless the list (or an item's body) goes on after it
                    nxt = lines[i + 1] if i + 1 < n else ""
                    if nxt.strip() and (
                        _indent(nxt) > base or _LIST_ITEM.match(nxt) and _indent(nxt) >= base
                    ):
                        block.append("")
                        i += 1
                        continue
                    break
                if (
                    _indent(cur) <= base
                    and not _LIST_ITEM.match(cur)
                    and (_HEADING.match(cur) or _FENCE.match(cur) or _HR.match(cur) or _QUOTE.match(cur))
                ):
                    break
                if _indent(cur) < base:
                    break
                block.append(cur)
                i += 1
            out.append(_list(block, autolink))
            continue
        # a paragraph: runs until a blank line or the start of another block
        para = [line.strip() if not line.endswith("  ") else line.lstrip()]
        i += 1
        while i < n:
            cur = lines[i]
            if (
                not cur.strip()
                or _FENCE.match(cur)
                or _HEADING.match(cur)
                or _HR.match(cur)
                or _QUOTE.match(cur)
            ):
                break
            if _LIST_ITEM.match(cur) and (_LIST_ITEM.match(cur).group(3) or "").strip():
                break
            if "|" in cur and i + 1 < n and _TABLE_SEP.match(lines[i + 1]):
                break
            para.append(cur.lstrip() if cur.endswith("  ") else cur.strip())
            i += 1
        out.append(f"<p>{inline(chr(10).join(para), autolink)}</p>")
    return "\n".join(out)


def render(text: str, autolink: Autolink | None = None) -> str:
    """Markdown text to an HTML fragment. Safe to insert into a page as is."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ").replace("\x00", "\ufffd")
    text = _COMMENT.sub("", text)  # the loop's markers (<!-- ledger:ID -->) are for machines, not readers
    return _blocks(text.split("\n"), autolink)
