"""Rewriting the list file: byte-exact for untouched rows, atomic, and safe with concurrent writers."""

import codecs
import multiprocessing
import os

import pytest

from newsletter.subscribers import csvfile
from newsletter.errors import SubscriberError
from newsletter.subscribers.csvfile import Dialect, RowFormatter, locked
from newsletter.subscribers.edits import ListEditor, add_subscriber, remove_subscriber, unsubscribe
from newsletter.subscribers.reader import iter_subscribers

NOW = "2026-11-29T10:00:00Z"


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != "list.csv")


def test_rewrite_keeps_bom_crlf_delimiter_quoting_and_unknown_columns(tmp_path):
    path = tmp_path / "list.csv"
    original = codecs.BOM_UTF8 + ('"Email";Nom;status;Pays\r\n'
                                  '"ada@example.com";"Ada";;UK\r\n'
                                  'grace@example.org;"Grace; Rear Admiral";subscribed;"US"\r\n'
                                  '\r\n'
                                  'linus@example.net;Linus\r\n').encode()
    path.write_bytes(original)
    assert unsubscribe(path, "Grace@Example.org", now=NOW).outcome == "unsubscribed"
    assert path.read_bytes() == codecs.BOM_UTF8 + (
        'Email;Nom;status;Pays;unsubscribed_at\r\n'       # a new column at the end, in the file's dialect
        '"ada@example.com";"Ada";;UK\r\n'                 # untouched: byte for byte, quotes and all
        f'grace@example.org;"Grace; Rear Admiral";unsubscribed;US;{NOW}\r\n'  # changed: minimal quoting
        '\r\n'                                            # a blank line stays
        'linus@example.net;Linus\r\n').encode()           # a short row stays short
    assert leftovers(tmp_path) == []


def test_appending_after_a_last_line_without_line_end(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,name\nada@example.com,Ada")
    assert add_subscriber(path, "grace@example.org", name="Grace", now=NOW).outcome == "added"
    assert path.read_text() == "email,name\nada@example.com,Ada\ngrace@example.org,Grace\n"


def test_new_list_is_created_with_the_standard_columns(tmp_path):
    path = tmp_path / "sub" / "list.csv"
    add_subscriber(path, " Ada@EXAMPLE.com ", name="Ada", tags=["weekly", "Weekly", "news"], now=NOW)
    assert path.read_text() == ("email,name,status,tags,subscribed_at\n"
                                f"Ada@example.com,Ada,subscribed,weekly;news,{NOW}\n")


def test_a_bare_carriage_return_in_a_value_is_quoted():
    assert RowFormatter(Dialect())(["a\rb", "c\nd", "e", ""]) == '"a\rb","c\nd",e,\n'
    assert RowFormatter(Dialect(";", "\r\n"))(["a;b", 'say "hi"']) == '"a;b";"say ""hi"""\r\n'


def test_rewrite_replaces_the_file_atomically_and_keeps_its_mode(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email\nada@example.com\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    remove_subscriber(path, "ada@example.com")
    assert path.read_text() == "email\n"
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten in place
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert leftovers(tmp_path) == []


def test_a_failure_half_way_leaves_the_file_and_no_temp_file(tmp_path):
    path = tmp_path / "list.csv"
    content = "email,name\nada@example.com,Ada\ngrace@example.org,Grace\n"
    path.write_text(content)
    with pytest.raises(RuntimeError, match="disk on fire"):
        with ListEditor(path) as edit:
            for row in edit.rows():
                edit.replace(row, {"name": "X"})
                raise RuntimeError("disk on fire")
    assert path.read_text() == content
    assert leftovers(tmp_path) == []


def test_a_writer_waits_for_the_lock_and_says_so_when_it_gives_up(tmp_path, monkeypatch):
    path = tmp_path / "list.csv"
    path.write_text("email\n")
    monkeypatch.setattr(csvfile, "LOCK_TIMEOUT", 0.2)
    with locked(path):
        with pytest.raises(SubscriberError) as caught:
            add_subscriber(path, "ada@example.com")
    assert str(caught.value) == (f"{path}: another newsletter command is changing this list and did not finish in "
                                 f"0.2 s (wait for it and try again; it holds {tmp_path / '.list.csv.lock'})")
    assert path.read_text() == "email\n"
    add_subscriber(path, "ada@example.com")  # released
    assert leftovers(tmp_path) == []


def _add_many(path, worker, count):
    for i in range(count):
        add_subscriber(path, f"w{worker}-{i}@example.com", tags=[f"w{worker}"])


def test_concurrent_writers_lose_no_update(tmp_path):
    path = tmp_path / "list.csv"
    path.write_text("email,name,status,tags,subscribed_at\n")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(path, w, 25)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert [p.exitcode for p in workers] == [0, 0, 0, 0]
    emails = [s.email for s in iter_subscribers(path)]
    assert len(emails) == 100 and set(emails) == {f"w{w}-{i}@example.com" for w in range(4) for i in range(25)}
    assert leftovers(tmp_path) == []


def test_lock_is_taken_again_after_the_lock_file_was_removed(tmp_path):
    path = tmp_path / "list.csv"
    with locked(path):
        assert os.path.exists(tmp_path / ".list.csv.lock")
    assert not os.path.exists(tmp_path / ".list.csv.lock")
    with locked(path):
        pass
