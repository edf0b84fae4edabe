from __future__ import annotations

import os

import pytest

from healthgpt.data.sources.fingerprint import fingerprint


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"x" * 10)
    (tmp_path / "b.json").write_text("[]")
    return tmp_path


def test_untouched_tree_keeps_its_version(tree):
    assert fingerprint(tree) == fingerprint(tree)
    assert fingerprint(tree, content=True) == fingerprint(tree, content=True)


def _modify(tree):
    (tree / "a" / "x.jpg").write_bytes(b"y" * 11)


def _add(tree):
    (tree / "a" / "new.jpg").write_bytes(b"n")


def _remove(tree):
    (tree / "b.json").unlink()


def _rename(tree):
    (tree / "b.json").rename(tree / "c.json")


def _touch(tree):
    stat = (tree / "b.json").stat()
    os.utime(tree / "b.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def _add_hidden(tree):
    # A DICOM export's `.hidden/IM0001` is read (and judged) by the folder readers.
    (tree / ".hidden").mkdir()
    (tree / ".hidden" / "IM0001").write_bytes(b"DICM")


@pytest.mark.parametrize("change", [_modify, _add, _remove, _rename, _touch, _add_hidden])
def test_each_kind_of_change_moves_the_version(tree, change):
    before = fingerprint(tree)
    change(tree)
    assert fingerprint(tree) != before


def test_content_mode_sees_same_size_rewrites_that_keep_mtime(tree):
    path = tree / "a" / "x.jpg"
    stat = path.stat()
    before = fingerprint(tree, content=True)
    path.write_bytes(b"z" * 10)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(tree) == fingerprint(tree)  # metadata mode cannot see it
    assert fingerprint(tree, content=True) != before


def test_missing_root_has_a_distinct_version(tmp_path):
    assert fingerprint(tmp_path / "absent") == "missing"
