"""The console's forms: text with timestamps and stderr marks, JSON lines (``_console.py``)."""

from __future__ import annotations

import datetime
import io
import json
import re

import pytest

from aioproc import ExitStatus
from aioproc.supervisor import Console, Exited, Service, Starting, Supervisor
from aioproc.supervisor._console import colour_wanted, event_name, iso_time

from ..helpers import no_descendants_left  # noqa: F401 - a fixture

WHEN = 1796535792.345  # 2026-12-06 03:43:12.345 UTC


def text(console: Console) -> str:
    stream = console.stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


def make(**kwargs: object) -> Console:
    console = Console(io.StringIO(), color=False, **kwargs)  # type: ignore[arg-type]
    console.register("a")
    console.register("longer")
    return console


def test_names_are_aligned_and_blocks_prefixed_line_by_line() -> None:
    c = make()
    c.lines("a", b"hello\nworld\n", False, 1, WHEN)
    c.lines("longer", b"x\n", False, 2, WHEN)
    assert text(c) == "a      | hello\na      | world\nlonger | x\n"


@pytest.mark.parametrize(
    "block",
    [
        "café ✓\n".encode(),  # UTF-8: the per-line path
        b"tab\there\n",  # plain
        b"crlf\r\n",  # a CR before the newline is dropped
    ],
)
def test_text_lines_keep_what_is_safe(block: bytes) -> None:
    c = make()
    c.lines("a", block, False, 1, WHEN)
    expected = block.decode().removesuffix("\n").removesuffix("\r")
    assert text(c) == f"a      | {expected}\n"


def test_controls_and_invalid_utf8_are_made_visible_in_text() -> None:
    c = make()
    c.lines("a", b"\x1b]0;title\x07 \xff\xfe ok\nnext\n", False, 1, WHEN)
    assert text(c) == "a      | \\x1b]0;title\\x07 \ufffd\ufffd ok\na      | next\n"


def test_clock_timestamps_come_first_as_in_honcho() -> None:
    c = make(timestamps="clock")
    c.lines("a", b"one\ntwo\n", False, 1, WHEN)
    stamp = datetime.datetime.fromtimestamp(WHEN).strftime("%H:%M:%S")
    assert text(c) == f"{stamp} a      | one\n{stamp} a      | two\n"


def test_iso_timestamps_have_milliseconds_and_the_offset() -> None:
    c = make(timestamps="iso")
    c.lines("a", b"one\n", False, 1, WHEN)
    stamp, rest = text(c).split(" ", 1)
    assert rest == "a      | one\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", stamp)
    assert datetime.datetime.fromisoformat(stamp).timestamp() == pytest.approx(WHEN, abs=0.001)


def test_stderr_lines_are_marked_when_asked() -> None:
    c = make(mark_stderr=True)
    assert c.separate_stderr
    c.lines("a", b"out\n", False, 1, WHEN)
    c.lines("a", b"err\n", True, 1, WHEN)
    assert text(c) == "a      | out\na      ! err\n"
    assert not make().separate_stderr


def test_colours_wrap_the_label_only() -> None:
    c = Console(io.StringIO(), color=True)
    c.register("a")
    c.lines("a", b"x\n", False, 1, WHEN)
    assert text(c) == "\x1b[36ma |\x1b[0m x\n"


@pytest.mark.parametrize(
    "block",
    [
        b"plain ascii line\nsecond\n",
        b'quotes " and \\ backslashes\n',
        b"\x1b[2Kescape\x07 and \x00 nul\n",
        "unicode ✓ café\n".encode(),
        b"invalid \xff\xfe utf8\n",
        b"tab\there\n",
    ],
)
def test_json_lines_parse_back_to_what_the_service_wrote(block: bytes) -> None:
    c = make(log_format="json")
    assert c.separate_stderr  # the stream field must be true
    c.lines("a", block * 3, True, 42, WHEN)
    records = [json.loads(line) for line in text(c).splitlines()]
    expected = block[:-1].decode("utf-8", "backslashreplace").split("\n")
    assert [r["line"] for r in records] == expected * 3
    for r in records:
        assert r["service"] == "a"
        assert r["stream"] == "stderr"
        assert r["pid"] == 42
        assert datetime.datetime.fromisoformat(r["time"]).timestamp() == pytest.approx(
            WHEN, abs=1e-3
        )
        assert list(r) == ["time", "service", "stream", "pid", "line"]


def test_json_survives_a_name_that_needs_escaping() -> None:
    c = Console(io.StringIO(), log_format="json")
    c.lines('we"b', b"x\n", False, 1, WHEN)
    assert json.loads(text(c))["service"] == 'we"b'


def test_the_supervisors_own_lines_carry_the_event() -> None:
    c = make(log_format="json")
    c.say("hello")
    c.say("a exited with code 3", event=Exited(
        service="a", pid=7, status=ExitStatus(7, 3), reason="exited", will_restart=False
    ))  # fmt: skip
    first, second = (json.loads(line) for line in text(c).splitlines())
    assert first["event"] == "message"
    assert first["message"] == "hello"
    assert "service" not in first
    assert second["event"] == "exited"
    assert second["service"] == "a"
    assert second["exit_code"] == 3
    assert second["signal"] is None
    assert second["pid"] == 7
    assert second["will_restart"] is False
    assert second["message"] == "a exited with code 3"


def test_the_supervisors_own_lines_in_text() -> None:
    c = Console(io.StringIO(), color=False, min_width=7, timestamps="clock")
    c.say("starting \x1b[2J")
    assert re.fullmatch(r"\d\d:\d\d:\d\d aioproc \| starting \\x1b\[2J\n", text(c))


def test_event_names() -> None:
    assert event_name(Starting(service="a", pid=1, attempt=0)) == "starting"
    from aioproc.supervisor import BackingOff

    assert event_name(BackingOff(service="a", delay=1, attempt=1)) == "backing_off"


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="timestamps"):
        Console(timestamps="rfc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log_format"):
        Console(log_format="xml")  # type: ignore[arg-type]


def test_colour_follows_no_color_and_force_color(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    assert not colour_wanted(out, None)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert colour_wanted(out, None)
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_wanted(out, None)
    assert colour_wanted(out, True)


@pytest.mark.usefixtures("no_leaks", "no_descendants_left")
async def test_a_service_stdout_and_stderr_told_apart() -> None:
    stream = io.StringIO()
    svc = Service("s", ["sh", "-c", "echo out; echo err >&2"], restart="no")
    async with Supervisor([svc], output_stream=stream, color=False, mark_stderr=True) as sup:
        await sup.wait()
    assert sorted(stream.getvalue().splitlines()) == ["s ! err", "s | out"]


@pytest.mark.usefixtures("no_leaks", "no_descendants_left")
async def test_json_mode_end_to_end() -> None:
    stream = io.StringIO()
    script = r"printf 'ok\n\033[31mred\n\377bad\n'; echo oops >&2"
    svc = Service("s", ["sh", "-c", script], restart="no")
    async with Supervisor([svc], output_stream=stream, log_format="json") as sup:
        await sup.wait()
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_stream = {s: [r["line"] for r in records if r["stream"] == s] for s in ("stdout", "stderr")}
    assert by_stream == {"stdout": ["ok", "\x1b[31mred", "\\xffbad"], "stderr": ["oops"]}
    (pid,) = {r["pid"] for r in records}
    assert isinstance(pid, int)
    assert pid > 1


@pytest.mark.parametrize(
    "when",
    [
        WHEN,
        0.0,
        930694181.1439999,
        1e9 + 0.9999995,
        1e9 + 0.0000005,
        1e9 + 0.9995,
        1.5e9 + 0.999999,
    ],
)
def test_iso_time_is_what_datetime_says(when: float) -> None:
    """The per-second cache rounds as datetime does (to the microsecond, then down)."""
    expected = datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec="milliseconds")
    assert iso_time(when) == expected
    assert iso_time(when + 1) != expected  # the cache follows the second
