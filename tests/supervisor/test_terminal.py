"""Service output made safe for the operator's terminal (``_terminal.py``), in prefix mode."""

from __future__ import annotations

import io
import re

import pytest

from aioproc.supervisor import Service, Supervisor
from aioproc.supervisor._terminal import neutralise

from ..helpers import no_descendants_left  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("no_leaks", "no_descendants_left")

#: What a hostile service prints: return to the line's start, erase it, fake another
#: service's line; set the window title; backspace over the prefix; a C1 CSI.
ATTACK = "\r\x1b[2Kweb | FAKE\x1b]0;owned\x07\x08\x08\x9b2J\x00end"
#: Anything a terminal acts on, but TAB and (with raw output) SGR.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def test_control_characters_are_shown_escaped() -> None:
    out = neutralise(ATTACK)
    assert out == r"\x0d\x1b[2Kweb | FAKE\x1b]0;owned\x07\x08\x08\x9b2J\x00end"
    assert not CONTROL.search(out)


def test_plain_lines_and_tabs_are_left_alone() -> None:
    line = "GET /index.html\t200\tcafé ✓"
    assert neutralise(line) is line
    assert neutralise(line, keep_sgr=True) is line


def test_sgr_kept_only_when_asked_and_reset_at_the_end() -> None:
    coloured = "\x1b[1;31merror\x1b[0m: \x1b[2K\rbad"
    assert neutralise(coloured) == r"\x1b[1;31merror\x1b[0m: \x1b[2K\x0dbad"
    kept = neutralise(coloured, keep_sgr=True)
    assert kept == "\x1b[1;31merror\x1b[0m: \\x1b[2K\\x0dbad\x1b[0m"
    # Only SGR sequences are left: nothing else a terminal would act on.
    assert not CONTROL.search(re.sub("\x1b\\[[0-9;:]*m", "", kept))


@pytest.mark.parametrize("raw_output", [False, True], ids=["escaped", "raw-output"])
async def test_a_service_cannot_rewrite_the_terminal(raw_output: bool) -> None:
    """End to end: a real service's hostile output reaches the stream neutralised."""
    stream = io.StringIO()
    script = r"printf '\033[32mgreen\033[0m\r\033[2Kweb | FAKE\033]0;owned\007\n'"
    svc = Service("evil", ["sh", "-c", script], restart="no")
    web = Service("web", ["true"], restart="no")
    async with Supervisor(
        [svc, web], output_stream=stream, color=False, raw_output=raw_output
    ) as sup:
        await sup.wait()
    (line,) = [x for x in stream.getvalue().splitlines() if x.startswith("evil")]
    green = "\x1b[32mgreen\x1b[0m" if raw_output else r"\x1b[32mgreen\x1b[0m"
    tail = r"\x0d\x1b[2Kweb | FAKE\x1b]0;owned\x07"
    assert line == "evil | " + green + tail + ("\x1b[0m" if raw_output else "")
    # Never a bare CR, ESC not starting an SGR, BEL...: no cursor move, no title.
    assert not CONTROL.search(re.sub("\x1b\\[[0-9;:]*m", "", line))
