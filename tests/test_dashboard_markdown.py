"""The dashboard's Markdown renderer: what resources.md uses renders, and nothing it contains can
inject markup, scripts or network loads into the page."""

from __future__ import annotations

import pytest

from dashboard.markdown import inline, render, safe_url


def test_headings_get_anchors_and_unique_ids():
    out = render("# Learnings\n\n## Summary\n\n## Summary\n### Deep `code` *x*")
    assert '<h1 id="md-learnings">Learnings</h1>' in out
    assert '<h2 id="md-summary">Summary</h2>' in out
    assert '<h2 id="md-summary-2">Summary</h2>' in out
    assert '<h3 id="md-deep-code-x">Deep <code>code</code> <em>x</em></h3>' in out


def test_paragraphs_and_hard_breaks():
    out = render("one\ntwo  \nthree\n\nfour")
    assert out == "<p>one\ntwo<br>\nthree</p>\n<p>four</p>"


def test_emphasis_strong_strike_and_code():
    assert inline("*a* _b_ **c** __d__ ~~e~~ `f*g*`") == (
        "<em>a</em> <em>b</em> <strong>c</strong> <strong>d</strong> <del>e</del> <code>f*g*</code>"
    )
    assert inline("**bold with *nested* em**") == "<strong>bold with <em>nested</em> em</strong>"
    # identifiers are not emphasis
    assert inline("MATRIX_LR and snake_case_name") == "MATRIX_LR and snake_case_name"
    assert inline("2 * 3 * 4") == "2 * 3 * 4"
    assert inline(r"\*not em\*") == "*not em*"


def test_lists_nested_ordered_and_tasks():
    out = render(
        "- one\n  more of one\n- two\n  - two.a\n  - two.b\n- [x] done\n- [ ] open\n\n3. three\n4. four"
    )
    assert out.startswith("<ul><li>one\nmore of one</li><li>two<ul><li>two.a</li><li>two.b</li></ul></li>")
    assert "&#x2611;</span> done" in out and "&#x2610;</span> open" in out
    assert '<ol start="3"><li>three</li><li>four</li></ol>' in out


def test_list_items_separated_by_blank_lines_stay_one_list():
    out = render("- a\n\n- b\n\nafter")
    assert out == "<ul><li>a</li><li>b</li></ul>\n<p>after</p>"


def test_tables_with_alignment_and_inline_markup():
    out = render("| id | Δ bpb | note |\n|:---|---:|:-:|\n| `x1` | -0.0012 | **kept** |\n| x2 | +0.3 |\n")
    assert '<thead><tr><th class="align-left">id</th><th class="align-right">Δ bpb</th>' in out
    assert '<td class="align-left"><code>x1</code></td>' in out
    assert '<td class="align-center"><strong>kept</strong></td>' in out
    assert out.count("<tr>") == 3
    assert '<td class="align-center"></td>' in out  # a short row is padded


def test_fenced_code_is_escaped_verbatim():
    out = render("```python\nif a < b and c > d:\n    print('<b>', **kw)\n```\n")
    assert out == (
        '<pre><code class="language-python">if a &lt; b and c &gt; d:\n'
        "    print(&#x27;&lt;b&gt;&#x27;, **kw)</code></pre>"
    )
    # an unclosed fence runs to the end instead of swallowing nothing
    assert render("~~~\nx\n").startswith("<pre><code>x")


def test_blockquote_and_rule():
    out = render("> a *quote*\n> on two lines\n\n---\n")
    assert out == "<blockquote><p>a <em>quote</em>\non two lines</p></blockquote>\n<hr>"


def test_links_autolinks_and_bare_urls():
    assert inline("[PR](https://github.com/o/r/pull/1)") == (
        '<a href="https://github.com/o/r/pull/1" rel="noopener noreferrer">PR</a>'
    )
    assert inline('[t](docs/a.md "Title")') == '<a href="docs/a.md" title="Title">t</a>'
    assert inline("[anchor](#md-summary)") == '<a href="#md-summary">anchor</a>'
    assert inline("<https://x.org/a?b=1&c=2>") == (
        '<a href="https://x.org/a?b=1&amp;c=2" rel="noopener noreferrer">https://x.org/a?b=1&amp;c=2</a>'
    )
    assert inline("see https://x.org/p.").startswith('see <a href="https://x.org/p" ')
    assert inline("[wiki](https://en.wikipedia.org/wiki/A_(b))").startswith(
        '<a href="https://en.wikipedia.org/wiki/A_(b)"'
    )


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " java\tscript:alert(1)",
        "data:text/html,<script>",
        "vbscript:x",
        "file:///etc/passwd",
    ],
)
def test_unsafe_link_targets_become_text(url):
    assert safe_url(url) is None
    out = render(f"[click]({url})")
    assert "href" not in out and "click" in out


def test_images_become_links_and_load_nothing():
    out = inline("![plot](https://example.com/p.png)")
    assert out == '<a href="https://example.com/p.png" rel="noopener noreferrer">plot</a>'
    assert "<img" not in render("![x](https://e/x.png)")


def test_raw_html_is_shown_not_interpreted():
    src = (
        '<script>alert(1)</script>\n\n<img src=x onerror="alert(1)">\n\n- <b>x</b>\n\n'
        "| <i>a</i> |\n|---|\n| \"q\" & 's' |"
    )
    out = render(src)
    for bad in ("<script", "<img", "<b>", "<i>"):
        assert bad not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "&quot;q&quot; &amp; &#x27;s&#x27;" in out
    # link text and titles are escaped too
    out = inline('[<b>x</b>](https://a.b "t\\" onmouseover=\\"x")')
    assert "<b>" not in out and 'onmouseover="' not in out


def test_autolink_hook_sees_escaped_plain_text_only():
    seen = []

    def hook(s: str) -> str:
        seen.append(s)
        return s.replace("ID1", '<a href="#exp-ID1">ID1</a>')

    out = render("ID1 in text, `ID1 in code`, <https://x.org/ID1> & <tag>", autolink=hook)
    assert out.count('href="#exp-ID1"') == 2  # in text and in code, not inside the URL
    assert '<code><a href="#exp-ID1">ID1</a> in code</code>' in out
    assert all("<tag>" not in s for s in seen) and any("&lt;tag&gt;" in s for s in seen)


def test_comments_are_dropped_and_character_references_kept():
    out = render("## Log\n<!-- ledger:20261101-000000-abcdef -->\n\n- x &lt;y&gt; &amp; z &#8594; &nope w")
    assert "ledger:" not in out and "&lt;!--" not in out
    assert "<li>x &lt;y&gt; &amp; z &#8594; &amp;nope w</li>" in out


def test_the_real_resources_md_renders():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "resources.md"
    if not path.is_file():
        pytest.skip("no resources.md in this checkout")
    out = render(path.read_text(encoding="utf-8"))
    assert out.startswith("<h1")
