"""Cutting output into blocks of whole lines, and getting them to the console (``_output.py``)."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioproc.supervisor import Service, Supervisor
from aioproc.supervisor._output import CUT_MARK, LINE_LIMIT, Splitter, split_lines

from ..helpers import no_descendants_left  # noqa: F401 - a fixture


class Blocks:
    def __init__(self, limit: int = LINE_LIMIT) -> None:
        self.blocks: list[bytes] = []
        self.splitter = Splitter(self.blocks.append, limit)

    @property
    def data(self) -> bytes:
        return b"".join(self.blocks)


# Bytes of every kind but "[" (so that CUT_MARK only comes from a cut): newlines,
# ASCII, the lead and continuation bytes of UTF-8 characters, invalid bytes.
_STREAM = st.lists(
    st.one_of(
        st.sampled_from([b"\n", b"a", b"\r", "é".encode(), "€".encode(), "😀".encode()]),
        st.binary(min_size=1, max_size=3).filter(lambda b: b"[" not in b),
        st.integers(1, 40).map(lambda n: b"x" * n),
    ),
    max_size=60,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(stream=_STREAM, cuts=st.lists(st.integers(0, 400), max_size=12), limit=st.integers(4, 16))
def test_any_stream_cut_into_any_chunks_comes_out_whole_and_bounded(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    def through(chunks: list[bytes]) -> list[bytes]:
        b = Blocks(limit)
        for chunk in chunks:
            if chunk:
                b.splitter.feed(chunk)
        b.splitter.flush()
        return b.blocks

    points = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    blocks = through([stream[a:b] for a, b in itertools.pairwise(points)])
    data = b"".join(blocks)
    # Every block is whole lines; the cuts are the only change (and the newline
    # the flush gives an unterminated last line).
    assert all(block.endswith(b"\n") for block in blocks)
    expected = stream if not stream or stream.endswith(b"\n") else stream + b"\n"
    assert data.replace(CUT_MARK + b"\n", b"") == expected
    for line in data[:-1].split(b"\n") if data else []:
        assert len(line.removesuffix(CUT_MARK)) <= limit
    # Where the chunks end changes nothing but how the lines are grouped.
    assert data == b"".join(through([stream]))
    assert data == b"".join(through([stream[i : i + 1] for i in range(len(stream))]))


def test_lines_are_passed_whole_as_soon_as_they_end() -> None:
    b = Blocks()
    b.splitter.feed(b"one\ntw")
    assert b.blocks == [b"one\n"]
    b.splitter.feed(b"o\r\nthree\nfo")
    assert b.blocks == [b"one\n", b"two\r\nthree\n"]  # one block per chunk
    b.splitter.flush()
    assert b.blocks[-1] == b"fo\n"  # the unterminated last line, with a newline
    b.splitter.flush()
    assert len(b.blocks) == 3
    assert split_lines(b.data) == ["one", "two", "three", "fo"]


def test_a_chunk_of_whole_lines_is_passed_on_as_it_is() -> None:
    b = Blocks()
    chunk = b"x\n" * 1000
    b.splitter.feed(chunk)
    assert b.blocks[0] is chunk  # no copy on the common path


def test_an_endless_line_is_cut_into_marked_pieces_and_never_held_whole() -> None:
    b = Blocks(limit=100)
    for _ in range(50):
        b.splitter.feed(b"x" * 37)
        assert len(b.splitter._tail) <= 100  # bounded, however long the line
    b.splitter.feed(b"y\n")
    lines = b.data.split(b"\n")[:-1]
    assert all(len(line) <= 100 + len(CUT_MARK) for line in lines)
    assert all(line.endswith(CUT_MARK) for line in lines[:-1])
    assert not lines[-1].endswith(CUT_MARK)
    assert b"".join(line.removesuffix(CUT_MARK) for line in lines) == b"x" * 1850 + b"y"


def test_a_long_line_inside_a_block_is_cut_and_its_neighbours_left_alone() -> None:
    b = Blocks(limit=100)
    block = b"short\n" + b"z" * 250 + b"\n" + b"a" * 80 + b"\nend\n"
    b.splitter.feed(block)
    assert b.data.split(b"\n")[:-1] == [
        b"short",
        b"z" * 100 + CUT_MARK,
        b"z" * 100 + CUT_MARK,
        b"z" * 50,
        b"a" * 80,  # longer than half the limit: a false alarm, left whole
        b"end",
    ]


def test_lines_near_the_limit_are_not_cut() -> None:
    b = Blocks(limit=100)
    block = b"".join(b"q" * n + b"\n" for n in (100, 99, 51, 50, 1, 0, 100))
    b.splitter.feed(block)
    assert b.data == block


def test_cuts_fall_between_utf8_characters() -> None:
    b = Blocks(limit=10)
    b.splitter.feed("ééééééééé\n".encode())  # 2 bytes each: the cut at 10 would split one
    pieces = [line.removesuffix(CUT_MARK) for line in b.data.split(b"\n")[:-1]]
    assert [p.decode() for p in pieces] == ["ééééé", "éééé"]
    b = Blocks(limit=10)
    b.splitter.feed("a€€€€€\n".encode())  # 3 bytes each
    pieces = [line.removesuffix(CUT_MARK) for line in b.data.split(b"\n")[:-1]]
    assert [p.decode() for p in pieces] == ["a€€€", "€€"]


PY = sys.executable


@pytest.mark.usefixtures("no_leaks", "no_descendants_left")
async def test_an_unterminated_last_line_is_written_when_the_service_exits() -> None:
    stream = io.StringIO()
    svc = Service("s", ["printf", "first\\nno newline"], restart="no")
    async with Supervisor([svc], output_stream=stream, color=False) as sup:
        await sup.wait()
    assert stream.getvalue() == "s | first\ns | no newline\n"
    assert [line.text for line in sup.logs()] == ["first", "no newline"]


@pytest.mark.usefixtures("no_leaks", "no_descendants_left")
async def test_two_chatty_services_never_mix_within_a_line() -> None:
    stream = io.StringIO()
    # Long lines written in several pieces each (unbuffered, 1000 bytes a write):
    # what reaches the pipe is often a line's start without its end.
    code = (
        "import os, sys\n"
        "tag = sys.argv[1]\n"
        "for i in range(300):\n"
        "    line = f'{tag}{i:04d}' + tag * 5000 + '\\n'\n"
        "    for k in range(0, len(line), 1000): os.write(1, line[k:k+1000].encode())\n"
    )
    services = [Service(t, [PY, "-c", code, t], restart="no") for t in ("a", "b")]
    async with Supervisor(services, output_stream=stream, color=False, log_lines=0) as sup:
        await sup.wait()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 600
    for tag in "ab":
        mine = [line for line in lines if line.startswith(f"{tag} | ")]
        assert mine == [f"{tag} | {tag}{i:04d}" + tag * 5000 for i in range(300)]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.usefixtures("no_leaks", "no_descendants_left")
async def test_a_100mb_line_neither_exhausts_memory_nor_stalls_other_services() -> None:
    """100 MB without a newline goes through in marked pieces, while another
    service's lines keep coming; the supervisor's memory stays flat."""
    total = 100 * 1024 * 1024
    pieces: list[tuple[int, bool]] = []  # (length, ends with the mark) of each line of huge
    ticks_after = 0
    rss = {"base": _rss(), "peak": 0}
    done = asyncio.Event()
    mark = CUT_MARK.decode()

    def seen(name: str, line: str) -> None:
        nonlocal ticks_after
        rss["peak"] = max(rss["peak"], _rss())
        if name == "huge":
            pieces.append((len(line), line.endswith(mark)))
        elif sum(n - len(mark) for n, _ in pieces) >= total - LINE_LIMIT:
            ticks_after += 1  # the huge line is not over, and these still come
            if ticks_after >= 3:
                done.set()

    huge = (
        "import sys, time\n"
        "w = sys.stdout.buffer\n"
        "for _ in range(100): w.write(b'x' * 1048576)\n"
        "w.flush(); time.sleep(120)\n"
    )
    tick = "import time\nwhile True: print('tick', flush=True); time.sleep(0.01)\n"
    services = [
        Service("huge", [PY, "-c", huge], output=seen, restart="no"),
        Service("tick", [PY, "-c", tick], output=seen, restart="no"),
    ]
    async with Supervisor(services, log_lines=10):
        await asyncio.wait_for(done.wait(), 120)
    # Ended by the stop: the rest of the line (under 64 KiB was held) came out then.
    assert all(n <= LINE_LIMIT + len(mark) for n, _ in pieces)
    assert all(cut for _, cut in pieces[:-1])
    assert not pieces[-1][1]
    assert sum(n for n, _ in pieces) - len(mark) * (len(pieces) - 1) == total
    assert rss["peak"] - rss["base"] < 64 * 1024 * 1024
