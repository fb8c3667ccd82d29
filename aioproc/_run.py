"""``run()``: spawn, feed, capture, wait, with a timeout and a cancellation policy."""

from __future__ import annotations

import asyncio
import codecs
import locale
from typing import Any

from . import _procfs
from ._durations import check_duration
from ._process import Process, spawn
from ._spawn import PIPE
from ._status import CompletedProcess, ProcessError, TimeoutExpired
from ._util import shielded

__all__ = ["run"]


def _decode(data: bytes | None, encoding: str, errors: str) -> str | None:
    if data is None:
        return None
    # Universal newlines, as subprocess's text mode.
    return data.decode(encoding, errors).replace("\r\n", "\n").replace("\r", "\n")


def _decode_so_far(data: bytes | None, encoding: str, errors: str) -> str | bytes | None:
    """Decode the output of a child stopped at a timeout.

    The stop can cut a multi-byte character in two: that incomplete tail is
    left out rather than failing. If the output cannot be decoded anyway, it
    is returned as bytes (as :mod:`subprocess` always does on a timeout):
    raising :class:`UnicodeDecodeError` would hide the :class:`TimeoutExpired`.
    """
    if data is None:
        return None
    try:
        text = codecs.getincrementaldecoder(encoding)(errors).decode(data, final=False)
    except UnicodeDecodeError:
        return data
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _why_pipes_open(proc: Process) -> str:
    """The child exited before the timeout: say who kept its output pipes open."""
    fds = [s.fileno() for s in (proc.stdout, proc.stderr) if s is not None and not s.closed]
    holders = _procfs.pipe_holders(fds)
    who = ", ".join(f"{comm} (pid {pid})" for pid, comm in holders) or "processes now gone"
    return f"{proc.status}, but its output pipes stayed open past the timeout: held by {who}"


async def run(
    argv: Any,
    *,
    input: bytes | str | None = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    text: bool = False,
    encoding: str | None = None,
    errors: str | None = None,
    **spawn_kwargs: Any,
) -> CompletedProcess[Any]:
    """Run a command to completion and return a :class:`CompletedProcess`.

    Like :func:`subprocess.run`: ``input`` is written to stdin,
    ``capture_output`` collects stdout and stderr, ``check`` raises
    :class:`ProcessError` on failure, ``text`` (or ``encoding``/``errors``)
    decodes. Other keywords go to :func:`spawn`.

    On ``timeout`` the child is stopped gracefully (``stop_signal``, then
    ``stop_timeout``, then SIGKILL) and reaped, then :class:`TimeoutExpired`
    is raised with the output captured so far (in text mode, decoded as far
    as it goes: a character cut by the stop is left out; output that cannot
    be decoded stays bytes). If the task running ``run()``
    is cancelled, the child is stopped and reaped the same way before the
    cancellation propagates.
    """
    if capture_output:
        if spawn_kwargs.get("stdout") is not None or spawn_kwargs.get("stderr") is not None:
            raise ValueError("stdout and stderr arguments may not be used with capture_output")
        spawn_kwargs["stdout"] = PIPE
        spawn_kwargs["stderr"] = PIPE
    text_mode = text or encoding is not None or errors is not None
    enc = encoding or locale.getpreferredencoding(False)
    errs = errors or "strict"
    if text_mode:
        # Here, not when decoding the output: by then the child has run.
        codecs.lookup(enc)  # LookupError: unknown encoding
        codecs.lookup_error(errs)  # LookupError: unknown error handler name
    data: bytes | None
    if isinstance(input, str):
        if not text_mode:
            raise TypeError("input is a str; pass text=True (or bytes)")
        data = input.encode(enc, errs)
    else:
        data = input
    if data is not None:
        if spawn_kwargs.get("stdin") is not None:
            raise ValueError("stdin and input arguments may not both be used")
        spawn_kwargs["stdin"] = PIPE
    if timeout is not None:
        timeout = check_duration(timeout, "timeout")

    proc = await spawn(argv, **spawn_kwargs)
    out: list[bytes] = []
    err: list[bytes] = []
    try:
        if timeout is None:
            await proc._communicate(data, out, err)
        else:
            try:
                await asyncio.wait_for(proc._communicate(data, out, err), timeout)
            except asyncio.TimeoutError:
                detail = _why_pipes_open(proc) if proc.status is not None else None
                stopped = await shielded(proc.stop())
                proc._drain_available(out, err)
                stdout = b"".join(out) if proc.stdout is not None else None
                stderr = b"".join(err) if proc.stderr is not None else None
                raise TimeoutExpired(
                    argv,
                    timeout,
                    _decode_so_far(stdout, enc, errs) if text_mode else stdout,
                    _decode_so_far(stderr, enc, errs) if text_mode else stderr,
                    stopped,
                    detail,
                ) from None
    finally:
        # Every way out closes the pipes and reaps the child (stopping it
        # first if it still runs): success, timeout, an error, a cancellation,
        # and a cancellation that arrives while a timed-out child is being
        # stopped above. That last one escapes the ``except`` clause, so the
        # cleanup cannot live in a sibling ``except BaseException`` clause.
        await proc.aclose()
    status = proc.status
    assert status is not None  # aclose() reaped it
    stdout_b = b"".join(out) if proc.stdout is not None else None
    stderr_b = b"".join(err) if proc.stderr is not None else None
    result: CompletedProcess[Any] = CompletedProcess(
        argv,
        status.returncode,
        _decode(stdout_b, enc, errs) if text_mode else stdout_b,
        _decode(stderr_b, enc, errs) if text_mode else stderr_b,
        status,
    )
    if check and not status.success:
        raise ProcessError(status, argv, result.stdout, result.stderr)
    return result
