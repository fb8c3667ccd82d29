"""Log files rotated by size (``Service(output=LogFile(...))``), on real files.

The writer alone: rotation at a line boundary, a line longer than ``max_bytes``,
the number of backups, ``backups=0``, reopening after a rename, a shared file
rotated once, write errors (``/dev/full``). Then under a supervisor, with real
services writing as fast as they can: every line once, in order, whole, and no
file over ``max_bytes``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from aioproc.supervisor import LogFile, Service, Supervisor
from aioproc.supervisor._logfile import LogFiles, LogFileWriter

from ..helpers import run_python

pytestmark = pytest.mark.usefixtures("no_leaks")


class Errors:
    """Collects what a writer reports."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, OSError]] = []

    def __call__(self, message: str, exc: OSError) -> None:
        self.reports.append((message, exc))


def writer(path: Path, max_bytes: int = 0, backups: int = 5) -> tuple[LogFileWriter, Errors]:
    errors = Errors()
    return LogFileWriter(LogFile(path, max_bytes, backups), str(path), errors), errors


def files(path: Path) -> list[str]:
    """The names of the log file and its backups, sorted."""
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


def chain(path: Path) -> list[Path]:
    """The backups, oldest first, then the file: the order the lines were written in."""
    backups = []
    n = 1
    while (path.parent / f"{path.name}.{n}").exists():
        backups.append(path.parent / f"{path.name}.{n}")
        n += 1
    return [*reversed(backups), path]


# ------------------------------------------------------------------- LogFile


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": 3}, TypeError, "path must be a str or a path, not int"),
        ({"path": b"x.log"}, TypeError, "path must be a str or a path, not bytes"),
        ({"path": ""}, ValueError, "path must not be empty"),
        ({"path": "a\0b"}, ValueError, "path must not hold a NUL character"),
        ({"path": "x", "max_bytes": True}, TypeError, "max_bytes must be an int, not bool"),
        ({"path": "x", "max_bytes": -1}, ValueError, "max_bytes must be between 0 and"),
        ({"path": "x", "max_bytes": 2**63}, ValueError, "max_bytes must be between 0 and"),
        ({"path": "x", "max_bytes": "10M"}, TypeError, "max_bytes must be an int, not str"),
        ({"path": "x", "max_bytes": 1.5}, TypeError, "max_bytes must be an int, not float"),
        ({"path": "x", "backups": False}, TypeError, "backups must be an int, not bool"),
        ({"path": "x", "backups": -2}, ValueError, "backups must be between 0 and"),
    ],
)
def test_bad_log_file_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=f"^LogFile: {re.escape(message)}"):
        LogFile(**kwargs)


def test_a_log_file_is_a_value() -> None:
    a = LogFile(Path("/tmp/x.log"), max_bytes=10, backups=2)
    assert a == LogFile(Path("/tmp/x.log"), 10, 2)  # a reload sees an unchanged service
    assert a != LogFile(Path("/tmp/x.log"), 10, 3)
    with pytest.raises(AttributeError):
        a.max_bytes = 3  # type: ignore[misc]
    assert LogFile("x").max_bytes == 0  # never rotated by default, as a plain path


def test_service_takes_a_log_file_and_refuses_other_objects() -> None:
    spec = LogFile("x.log", max_bytes=4096)
    assert Service("s", ["true"], output=spec).output is spec
    with pytest.raises(TypeError, match="a path, a LogFile or a callable"):
        Service("s", ["true"], output=3)  # type: ignore[arg-type]


def test_services_sharing_a_file_must_agree_on_its_rotation(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    same = [
        Service("a", ["true"], output=LogFile(log, 100, 2)),
        Service("b", ["true"], output=LogFile(tmp_path / "." / "x.log", 100, 2)),
    ]
    Supervisor(same)
    Supervisor([Service("a", ["true"], output=str(log)), Service("b", ["true"], output=log)])
    # A plain path is never rotated; max_bytes=0 with any backups is the same thing.
    Supervisor(
        [Service("a", ["true"], output=str(log)), Service("b", ["true"], output=LogFile(log, 0, 9))]
    )
    with pytest.raises(ValueError, match=r"services 'a' and 'b' write to the same log file"):
        Supervisor([same[0], Service("b", ["true"], output=LogFile(log, 100, 3))])
    with pytest.raises(ValueError, match=r"services 'a' and 'b' write to the same log file"):
        Supervisor([Service("a", ["true"], output=str(log)), same[1]])
    sup = Supervisor(same)
    with pytest.raises(ValueError, match="same log file"):
        sup.add(Service("c", ["true"], output=str(log)))
    assert list(sup.services) == ["a", "b"]


# -------------------------------------------------------------------- writer


def test_without_max_bytes_it_only_appends(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"before\n")
    w, errors = writer(log)
    try:
        assert w.size == 7  # fstat at open
        w.write(b"a\n" * 10_000)
        w.write(b"b\n")
    finally:
        w.close()
    assert log.read_bytes() == b"before\n" + b"a\n" * 10_000 + b"b\n"
    assert files(log) == ["x.log"]
    assert not errors.reports
    assert (log.stat().st_mode & 0o777) == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_rotation_splits_a_block_at_the_last_line_that_fits(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, errors = writer(log, max_bytes=20)
    try:
        w.write(b"aaaaa\nbbbbb\nccccc\nddddd\neeeee\n")  # 30 bytes: 3 lines fit in 20
        assert (tmp_path / "x.log.1").read_bytes() == b"aaaaa\nbbbbb\nccccc\n"
        assert log.read_bytes() == b"ddddd\neeeee\n"
        assert w.size == 12
        w.write(b"fffff\n")  # 18 bytes: still fits
        assert files(log) == ["x.log", "x.log.1"]
        w.write(b"gg\n")  # 21 > 20: rotated before it
        assert (tmp_path / "x.log.2").read_bytes() == b"aaaaa\nbbbbb\nccccc\n"
        assert (tmp_path / "x.log.1").read_bytes() == b"ddddd\neeeee\nfffff\n"
        assert log.read_bytes() == b"gg\n"
    finally:
        w.close()
    assert not errors.reports


def test_a_file_can_end_exactly_at_max_bytes(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, _ = writer(log, max_bytes=12)
    try:
        w.write(b"abc\n" * 3)  # exactly 12: no rotation yet
        assert files(log) == ["x.log"]
        w.write(b"d\n")
        assert (tmp_path / "x.log.1").read_bytes() == b"abc\n" * 3
        assert log.read_bytes() == b"d\n"
    finally:
        w.close()


def test_the_size_of_an_existing_file_counts(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_bytes(b"x" * 15 + b"\n")
    w, _ = writer(log, max_bytes=20)
    try:
        w.write(b"12345\n")  # 16 + 6 > 20
    finally:
        w.close()
    assert (tmp_path / "x.log.1").read_bytes() == b"x" * 15 + b"\n"
    assert log.read_bytes() == b"12345\n"


def test_a_line_longer_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    long = b"L" * 50 + b"\n"
    w, _ = writer(log, max_bytes=10)
    try:
        w.write(b"short\n" + long + b"tail\n")
        w.write(long)
        w.write(b"end\n")
    finally:
        w.close()
    contents = [p.read_bytes() for p in chain(log)]
    assert contents == [b"short\n", long, b"tail\n", long, b"end\n"]


def test_the_number_of_backups_is_kept_and_the_oldest_dropped(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, _ = writer(log, max_bytes=6, backups=3)
    try:
        for i in range(10):
            w.write(f"line{i}\n".encode())  # 6 bytes each: one line per file
    finally:
        w.close()
    assert files(log) == ["x.log", "x.log.1", "x.log.2", "x.log.3"]
    assert [p.read_bytes() for p in chain(log)] == [b"line6\n", b"line7\n", b"line8\n", b"line9\n"]


def test_backups_zero_empties_the_file(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, _ = writer(log, max_bytes=12, backups=0)
    try:
        w.write(b"abc\n" * 3)
        w.write(b"def\n")
        assert log.read_bytes() == b"def\n"
        w.write(b"ghi\n" * 4)
        assert log.read_bytes() == b"ghi\n" * 2
    finally:
        w.close()
    assert files(log) == ["x.log"]


def test_many_backups_cost_nothing_until_they_exist(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, _ = writer(log, max_bytes=4, backups=10**9)
    try:
        for i in range(5):
            w.write(f"{i}{i}{i}\n".encode())
    finally:
        w.close()
    assert [p.read_bytes() for p in chain(log)] == [
        b"000\n",
        b"111\n",
        b"222\n",
        b"333\n",
        b"444\n",
    ]


def test_reopen_after_a_rename_writes_to_a_new_file_at_the_path(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, errors = writer(log, max_bytes=1000)
    try:
        w.write(b"one\n")
        log.rename(tmp_path / "x.log.old")  # what logrotate's create mode does
        w.write(b"two\n")  # still the old file: nothing lost before the reopen
        w.reopen()
        assert log.read_bytes() == b""
        assert w.size == 0
        w.write(b"three\n")
    finally:
        w.close()
    assert (tmp_path / "x.log.old").read_bytes() == b"one\ntwo\n"
    assert log.read_bytes() == b"three\n"
    assert not errors.reports


def test_rotation_after_the_file_was_moved_away_starts_a_new_one(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    w, errors = writer(log, max_bytes=12)
    try:
        w.write(b"abcdef\n")
        log.rename(tmp_path / "moved")
        w.write(b"ghijkl\n")  # rotation: nothing at the path to rename
        w.write(b"mn\n")
    finally:
        w.close()
    assert (tmp_path / "moved").read_bytes() == b"abcdef\n"
    assert log.read_bytes() == b"ghijkl\nmn\n"
    assert files(log) == ["x.log"]
    assert not errors.reports


def test_a_failed_reopen_keeps_writing_where_it_was(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    logs = LogFiles(Errors())
    w = logs.open(LogFile(sub / "x.log"))
    try:
        w.write(b"one\n")
        (sub / "x.log").rename(tmp_path / "x.log")
        sub.rmdir()
        with pytest.raises(OSError, match=r"cannot reopen log file '.*/sub/x.log': \[Errno 2\]"):
            logs.reopen()
        w.write(b"two\n")
    finally:
        logs.release(w)
    assert w.closed
    assert (tmp_path / "x.log").read_bytes() == b"one\ntwo\n"


def test_write_errors_drop_the_block_and_are_reported_once(tmp_path: Path) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk.
    w, errors = writer(Path("/dev/full"))
    try:
        w.write(b"one\n")
        w.write(b"two\n" * 100)
        w.reopen()  # a reopen (logrotate ran) makes the next error worth a report
        w.write(b"three\n")
    finally:
        w.close()
    assert w.dropped == 4 + 400 + 6
    assert len(errors.reports) == 2
    message, exc = errors.reports[0]
    assert exc.errno == 28
    assert message == (
        "aioproc: cannot write to log file '/dev/full': [Errno 28] No space left on device "
        "(its lines are dropped until it can be written again)"
    )


def test_a_failed_rotation_keeps_every_line_and_is_reported(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    (tmp_path / "x.log.1").mkdir()  # rename(x.log, x.log.1) fails: EISDIR
    (tmp_path / "x.log.1" / "keep").touch()
    w, errors = writer(log, max_bytes=10, backups=1)
    try:
        for i in range(6):
            w.write(f"line{i}\n".encode())
    finally:
        w.close()
    assert log.read_bytes() == b"".join(f"line{i}\n".encode() for i in range(6))
    assert errors.reports
    message, exc = errors.reports[0]
    assert exc.errno == 21
    assert message.startswith(f"aioproc: cannot rotate log file {str(log)!r}: [Errno 21] ")
    assert message.endswith("(still writing to it; tried again every max_bytes)")
    assert len(errors.reports) == 1  # once, though tried again at every max_bytes


def test_a_short_write_then_an_error_ends_the_cut_line_before_the_next(tmp_path: Path) -> None:
    # A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored as Python does) gives
    # a real short write, then EFBIG: in a child, so as not to limit pytest.
    log = tmp_path / "x.log"
    code = """
        import resource, sys
        from aioproc.supervisor import LogFile
        from aioproc.supervisor._logfile import LogFileWriter
        reports = []
        w = LogFileWriter(LogFile(sys.argv[1]), sys.argv[1], lambda m, e: reports.append(e.errno))
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.RLIM_INFINITY))
        w.write(b"a" * 59 + b"\\n")
        w.write(b"b" * 59 + b"\\n")  # 40 bytes fit, then EFBIG
        w.write(b"lost\\n")
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.RLIM_INFINITY))
        w.write(b"c" * 9 + b"\\n")
        print(reports, w.dropped)
    """
    res = run_python(code, str(log))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["[27]", str(20 + 5)]  # EFBIG, reported once
    assert log.read_bytes() == b"a" * 59 + b"\n" + b"b" * 40 + b"\n" + b"c" * 9 + b"\n"


def test_shared_files_share_one_writer_rotated_once(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path)
    logs = LogFiles(Errors())
    a = logs.open(LogFile(tmp_path / "x.log", max_bytes=12, backups=5))
    b = logs.open(LogFile(tmp_path / "link" / "x.log", max_bytes=12, backups=5))
    assert a is b
    assert logs.paths == [str(tmp_path / "x.log")]
    try:
        a.write(b"a1\na2\na3\n")
        b.write(b"b1\nb2\n")  # 15 > 12: one rotation, not one per user
        a.write(b"a4\n")
        logs.release(a)
        assert not b.closed  # b still uses it
        b.write(b"b3\n")
    finally:
        logs.release(b)
    assert b.closed
    assert logs.paths == []
    assert [p.read_bytes() for p in chain(tmp_path / "x.log")] == [
        b"a1\na2\na3\nb1\n",
        b"b2\na4\nb3\n",
    ]


# ---------------------------------------------------------------- supervisor

#: Prints ``COUNT`` numbered lines as fast as it can, one write(2) each.
COUNTER = (
    "import os, sys\n"
    "tag = sys.argv[1]; pad = 'x' * int(sys.argv[3])\n"
    "for i in range(int(sys.argv[2])):\n"
    "    os.write(1, f'{tag} {i:06d} {pad}\\n'.encode())\n"
)


def counter(name: str, tag: str, count: int, pad: int, output: LogFile) -> Service:
    argv = [sys.executable, "-c", COUNTER, tag, str(count), str(pad)]
    return Service(name, argv, restart="no", output=output)


def read_lines(path: Path, max_bytes: int) -> list[str]:
    """Every line of the file and its backups, oldest first; each file checked."""
    out: list[str] = []
    for part in chain(path):
        data = part.read_bytes()
        assert len(data) <= max_bytes, (part, len(data))
        assert data.endswith(b"\n"), part
        out.extend(data.decode().splitlines())
    return out


async def test_rotation_under_a_service_writing_as_fast_as_it_can(tmp_path: Path) -> None:
    log = tmp_path / "fast.log"
    count, max_bytes = 30_000, 4096
    spec = LogFile(log, max_bytes=max_bytes, backups=10_000)  # enough to keep everything
    async with Supervisor([counter("fast", "f", count, 40, spec)]) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 60)
    assert outcome.ok
    lines = read_lines(log, max_bytes)
    assert len(chain(log)) > 300  # it did rotate, many times
    assert lines == [f"f {i:06d} {'x' * 40}" for i in range(count)]


async def test_services_sharing_a_file_rotate_it_once(tmp_path: Path) -> None:
    log = tmp_path / "both.log"
    count, max_bytes = 10_000, 8192
    spec = LogFile(log, max_bytes=max_bytes, backups=10_000)
    services = [counter("a", "a", count, 30, spec), counter("b", "b", count, 10, spec)]
    async with Supervisor(services) as sup:
        outcome = await asyncio.wait_for(sup.wait(), 60)
    assert outcome.ok
    lines = read_lines(log, max_bytes)
    # Each service's lines once and in order; no file rotated twice (none lost).
    assert [x for x in lines if x.startswith("a ")] == [
        f"a {i:06d} {'x' * 30}" for i in range(count)
    ]
    assert [x for x in lines if x.startswith("b ")] == [
        f"b {i:06d} {'x' * 10}" for i in range(count)
    ]
    assert len(lines) == 2 * count


async def test_reopen_logs_while_a_service_writes(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    script = (
        "import os, sys\n"
        "i = 0\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    os.write(1, f'{i}\\n'.encode()); i += 1\n"
    )
    stop = tmp_path / "stop"
    svc = Service("w", [sys.executable, "-c", script, str(stop)], restart="no", output=LogFile(log))
    async with Supervisor([svc]) as sup:
        assert sup.reopen_logs() in ([], [str(log)])  # open once the run started
        await _until(lambda: log.exists() and log.stat().st_size > 0)
        log.rename(tmp_path / "x.log.old")
        assert sup.reopen_logs() == [str(log)]
        await _until(lambda: log.exists() and log.stat().st_size > 0)
        stop.touch()
        assert (await asyncio.wait_for(sup.wait(), 30)).ok
        assert sup.reopen_logs() == []  # closed with the last run
    old = (tmp_path / "x.log.old").read_text().splitlines()
    new = log.read_text().splitlines()
    assert old
    assert new
    assert [int(x) for x in old + new] == list(range(len(old) + len(new)))


async def test_an_unwritable_log_file_does_not_stop_the_service(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: seen.append(context))
    try:
        done = tmp_path / "done"
        svc = Service(
            "full",
            ["sh", "-c", f"for i in 1 2 3 4 5; do echo $i; done; touch {done}"],
            restart="no",
            output=LogFile("/dev/full"),
        )
        async with Supervisor([svc]) as sup:
            outcome = await asyncio.wait_for(sup.wait(), 30)
    finally:
        loop.set_exception_handler(None)
    assert outcome.ok
    assert done.exists()
    assert len(seen) == 1  # once, not once per line
    assert "cannot write to log file '/dev/full'" in seen[0]["message"]
    assert isinstance(seen[0]["exception"], OSError)


async def test_a_log_file_that_cannot_be_opened_fails_the_start(tmp_path: Path) -> None:
    svc = Service("nowhere", ["true"], restart="no", output=LogFile(tmp_path / "missing" / "x.log"))
    async with Supervisor([svc]) as sup:
        await asyncio.wait_for(sup.wait(), 30)
        status = sup.status()["nowhere"]
    assert status.last_status is None  # never spawned
    assert sup.reopen_logs() == []


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    """Poll the file system (what is under test) until ``predicate()``, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.005)
