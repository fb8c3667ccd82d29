"""Cutting output into lines, and the prefix writer."""

from __future__ import annotations

import io

import pytest

from aioproc.supervisor._output import LINE_LIMIT, LineSplitter, PrefixWriter, Sink, colour_wanted


class Lines(Sink):
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def line(self, data: bytes) -> None:
        self.lines.append(data)


def test_lines_are_passed_whole_as_soon_as_they_end() -> None:
    sink = Lines()
    seen: list[str] = []
    s = LineSplitter(sink, seen.append)
    s.feed(b"one\ntw")
    assert sink.lines == [b"one"]
    s.feed(b"o\r\nthr")
    assert sink.lines == [b"one", b"two"]
    s.flush()
    assert sink.lines == [b"one", b"two", b"thr"]
    assert seen == ["one", "two", "thr"]


def test_an_endless_line_is_cut_at_the_limit() -> None:
    sink = Lines()
    s = LineSplitter(sink)
    s.feed(b"x" * (LINE_LIMIT + 10))
    assert sink.lines == [b"x" * LINE_LIMIT]
    s.flush()
    assert sink.lines[1] == b"x" * 10


def test_prefix_writer_aligns_names() -> None:
    out = io.StringIO()
    w = PrefixWriter(out, color=False)
    w.register("a")
    w.register("longer")
    w.write("a", "hello")
    w.write("longer", "world")
    assert out.getvalue() == "a      | hello\nlonger | world\n"


def test_colour_follows_no_color_and_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert not colour_wanted(out, None)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert colour_wanted(out, None)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_wanted(out, None)
    assert colour_wanted(out, True)
