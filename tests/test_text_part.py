"""The plain-text part made from the Markdown (compile/markdown.py, body_to_text): what a reader of the
text part sees of raw HTML, which the HTML part shows as laid out."""

from newsletter.compile.markdown import body_to_text, render_body


def text_of(markdown: str) -> str:
    return body_to_text(render_body(markdown))


def test_a_raw_html_tables_cells_stay_apart_as_a_markdown_tables_do():
    text = text_of("<table><tr><td>Port</td><td>Ships &amp; ferries</td></tr><tr><th>a</th> <th>b</th></tr></table>\n")
    assert "Port | Ships & ferries\na | b" in text
    assert text_of("| x | y |\n|---|---|\n| 1 | 2 |\n").startswith("x | y\n1 | 2")  # the Markdown table's form


def test_raw_html_blocks_and_breaks_keep_their_lines_without_stray_spaces():
    assert "One\nTwo link (https://example.com/a)" in text_of(
        '<div>One</div><div>Two <a href="https://example.com/a">link</a></div>\n')
    assert "Inline red and\nbreak here." in text_of("Inline <span>red</span> and <br> break here.\n")


def test_nested_lists_indent_by_their_parents_marker_and_quotes_and_code_keep_their_place():
    text = text_of("- one\n  - two\n    - three\n- four\n\n> Quote line one\n> continues here\n\n"
                   "- item with code:\n\n  ```\n  x < 1\n  ```\n")
    assert "- one\n  - two\n    - three\n- four\n" in text
    assert "> Quote line one\n> continues here\n" in text  # each line of a quote keeps its "> "
    assert "- item with code:\n      x < 1\n" in text  # the code under its item, indented beyond it
