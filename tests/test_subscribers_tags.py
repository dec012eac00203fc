"""The tags cell as the send loop reads it: ``;``-separated, trimmed, blanks dropped, one tag the fast case."""

import pytest

from newsletter.subscribers.reader import eligible, iter_subscribers


@pytest.mark.parametrize("cell, tags", [
    ("weekly", ("weekly",)),
    ("  weekly  ", ("weekly",)),
    ("", ()),
    ("   ", ()),
    ("weekly;founders", ("weekly", "founders")),
    (" a ; ;b ;", ("a", "b")),
    (";", ()),
    ("News Letter", ("News Letter",)),
])
def test_tags_cell(tmp_path, cell, tags):
    path = tmp_path / "list.csv"
    path.write_text(f'email,tags\na@example.com,"{cell}"\n', encoding="utf-8")
    [subscriber] = iter_subscribers(path)
    assert subscriber.tags == tags
    assert eligible(subscriber, "weekly") == ("weekly" in tags)
