"""The process handle: :class:`Process` and :func:`spawn`.

Data flows one way: :func:`spawn` checks its arguments and runs the fork/exec
step (``_spawn``), the child is handed to a waiting backend (``_waiting``), and
the :class:`Process` wraps the two with the user-facing API: pipes, signals,
``stop()``, ``communicate()`` and the async context manager.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal as _signal
import sys
import threading
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, NamedTuple, final

import anyio.abc

from . import _cgroup, _procfs, _waiting
from ._cgroup import Cgroup
from ._durations import check_duration
from ._limits import RlimitValue
from ._spawn import (
    Redirect,
    Spawned,
    SpawnSpec,
    StrOrBytesPath,
    cancelled,
    discard,
    enqueue,
    fork_here,
    fork_here_locked,
    inline_allowed,
    make_spec,
    must_stay_inline,
)
from ._status import ExitStatus
from ._streams import ProcessReader, ProcessWriter
from ._util import anchor_loop, owned_by_loop, shielded

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

__all__ = ["Process", "spawn"]


def _check_signal(sig: int, what: str = "signal", allow_zero: bool = True) -> int:
    """Validate a signal number (0, the existence check, where allowed)."""
    if isinstance(sig, bool) or not isinstance(sig, int):
        raise TypeError(f"{what} must be a signal number, not {type(sig).__name__}")
    if not (0 if allow_zero else 1) <= sig < _signal.NSIG:
        raise ValueError(f"{what}: {sig} is not a valid signal number")
    try:
        return _signal.Signals(sig)
    except ValueError:  # 0, or a real-time signal without a name
        return int(sig)


@final
class Process(anyio.abc.Process):
    """A running (or finished) child process. Made by :func:`spawn`, not directly.

    It implements :class:`anyio.abc.Process`, so code written against anyio's
    interface can take it; ``wait()`` returns an :class:`ExitStatus`, which is
    an ``int`` (the returncode) as that interface expects.

    ``returncode`` is None while the child runs; afterwards it follows
    :mod:`subprocess` (minus the signal number when a signal killed it).
    ``mode`` is ``"pidfd"`` or ``"pid"`` (see :func:`aioproc.set_wait_mode`)
    and never changes for a given process.
    """

    # Slots: a service may hold thousands of these. (The anyio base class has
    # no slots, so a __dict__ and __weakref__ exist; the dict is only made if
    # something sets an attribute not listed here.)
    __slots__ = (
        "_cgroup",
        "_child",
        "_leads_group",
        "_stderr",
        "_stdin",
        "_stdout",
        "args",
        "kill_group",
        "stop_signal",
        "stop_timeout",
    )

    args: list[bytes]
    _stdin: ProcessWriter | None
    _stdout: ProcessReader | None
    _stderr: ProcessReader | None
    stop_signal: int
    stop_timeout: float
    kill_group: bool
    _leads_group: bool
    _child: _waiting.Child
    _cgroup: Cgroup | None

    def __init__(self, *_: object, **__: object) -> None:
        raise TypeError("Process objects are made by aioproc.spawn(), not directly")

    @classmethod
    def _create(
        cls,
        *,
        args: list[bytes],
        child: _waiting.Child,
        stdin: ProcessWriter | None,
        stdout: ProcessReader | None,
        stderr: ProcessReader | None,
        stop_signal: int,
        stop_timeout: float,
        kill_group: bool,
        leads_group: bool = False,
        cgroup: Cgroup | None = None,
    ) -> Process:
        self = object.__new__(cls)
        self._cgroup = cgroup
        self.args = args
        self._child = child
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.kill_group = kill_group
        self._leads_group = leads_group or kill_group
        if kill_group:
            # Until stop()/aclose() (or the finalizer) has swept the group,
            # the leader stays unreaped once it exits: its zombie pins the
            # group id, so members it left behind can still be reached.
            child.pin()
        _live[id(self)] = weakref.ref(self)
        return self

    # ------------------------------------------------------------- attributes
    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def cgroup(self) -> Cgroup | None:
        """The child's own cgroup with ``cgroup=``: it and everything it starts are in it."""
        return self._cgroup

    @property
    def stdin(self) -> ProcessWriter | None:
        """The child's stdin, with ``stdin=PIPE``."""
        return self._stdin

    @property
    def stdout(self) -> ProcessReader | None:
        """The child's stdout, with ``stdout=PIPE``."""
        return self._stdout

    @property
    def stderr(self) -> ProcessReader | None:
        """The child's stderr, with ``stderr=PIPE``."""
        return self._stderr

    @property
    def mode(self) -> Literal["pidfd", "pid"]:
        return self._child.mode  # type: ignore[return-value]

    @property
    def status(self) -> ExitStatus | None:
        """The :class:`ExitStatus` once the child has been reaped, else None.

        With ``kill_group=True`` it is known as soon as the child exits: the
        child is then kept unreaped until its group has been swept (see
        :attr:`reaped`).
        """
        return self._child.exit_status

    @property
    def reaped(self) -> bool:
        """Whether the child has been reaped: from then on its PID may be reused.

        With ``kill_group=True`` an exited child stays unreaped (a zombie)
        until :meth:`stop`, :meth:`aclose` or the end of ``async with`` has
        swept its process group, so the members it left behind can still be
        signalled through the group id its zombie keeps.
        """
        return self._child.status is not None

    @property
    def returncode(self) -> int | None:
        status = self._child.exit_status
        return None if status is None else status.returncode

    def __repr__(self) -> str:
        status = self._child.exit_status
        state = "running" if status is None else f"returncode={status.returncode}"
        return f"<aioproc.Process pid={self.pid} {self.mode} {state}>"

    # ---------------------------------------------------------------- waiting
    async def wait(self) -> ExitStatus:
        """Wait for the child to exit and return its status.

        Returns as soon as the child has exited and been reaped, whatever its
        pipes do (a grandchild holding them open does not delay it). Safe to
        cancel; any number of tasks may wait at once and all get the same status.
        With ``kill_group=True`` it returns once the child exited, while the
        child stays unreaped until its group is swept (see :attr:`reaped`).
        """
        return await self._child.wait()

    async def wait_exited(self) -> None:
        """Wait until the child has exited, reaped or not.

        The same moment as :meth:`wait` unless the reap is held
        (:meth:`hold_reap`): then this returns as soon as the child has
        exited, while it is still an unreaped zombie.
        """
        await self._child.wait_exited()

    def hold_reap(self) -> contextlib.AbstractContextManager[None]:
        """Keep the child unreaped inside the ``with`` block.

        Once it exits, the child stays a zombie until the block is left (then
        it is reaped, and :meth:`wait` returns). A zombie keeps its PID, and
        the id of the process group it leads, from being reused: inside the
        block :meth:`signal_group` can only reach the child's own group, and
        members left behind by a leader that has already exited can still be
        found by that id and signalled. :meth:`stop` does this with
        ``kill_group=True``; holds may nest.
        """
        return self._child.hold_reap()

    # ---------------------------------------------------------------- signals
    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the child (not its group).

        Raises :class:`ProcessLookupError` once the child has exited. It never
        reaches another process: in pidfd mode it goes through the pidfd, in
        pid mode the PID is only freed under the lock this call takes.
        """
        self._child.send_signal(_check_signal(sig))

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group the child leads.

        The child leads a group with ``kill_group=True``, ``start_new_session=True``
        or ``process_group=0``. PID-safe: the group is only signalled while its
        leader is unreaped (its zombie keeps the group id from being reused);
        after that this raises :class:`ProcessLookupError`.
        """
        if not self._leads_group:
            raise RuntimeError(
                "the child does not lead a process group: spawn it with kill_group=True, "
                "start_new_session=True or process_group=0"
            )
        self._child.signal_group(self.pid, _check_signal(sig))

    def terminate(self) -> None:
        """Send SIGTERM to the child."""
        self.send_signal(_signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the child, or to its whole process group with ``kill_group=True``."""
        self._signal_target(_signal.SIGKILL)

    def _signal_target(self, sig: int) -> None:
        if self.kill_group:
            self._child.signal_group(self.pid, sig)
        else:
            self._child.send_signal(sig)

    async def stop(self, timeout: float | None = None) -> ExitStatus:  # noqa: ASYNC109
        """Stop the child gracefully and return its status.

        Sends ``stop_signal``, waits up to ``timeout`` (default ``stop_timeout``)
        for it to exit, then sends SIGKILL, then reaps it. With
        ``kill_group=True`` both signals go to the whole process group, and the
        timeout covers the group: members still shutting down when the leader
        exits get the rest of it (the leader is kept unreaped meanwhile, so the
        group id stays ours). Then whatever is left in the group gets SIGKILL,
        so the group is empty when this returns. That holds too when the
        leader had exited before: it stays unreaped until this sweep.

        With ``cgroup=``, the stop signal also goes to every process in the
        cgroup, the timeout covers them too, and then the cgroup is killed
        whole (``cgroup.kill``): ``setsid`` and double-forked descendants
        included. It returns once ``cgroup.events`` says the cgroup is empty,
        and the cgroup is removed if aioproc made it.
        """
        child = self._child
        cg = self._cgroup
        if child.status is not None and (cg is None or cg.removed):
            return child.status
        timeout = self.stop_timeout if timeout is None else check_duration(timeout, "timeout")
        loop = child.loop
        deadline = loop.time() + timeout
        hold = child.hold_reap() if self.kill_group else contextlib.nullcontext()
        # Whether the group may have live members besides the leader: a /proc
        # scan (~1 ms per thousand processes) found some, or none was made.
        # One empty scan is enough: nobody outside the group joins it.
        members_left = True
        # Reaped already (only the cgroup is left to stop): the group id may
        # name somebody else's group by now, so the group is left alone.
        group = self.kill_group and child.status is None
        with hold:
            if child.status is None:
                with contextlib.suppress(ProcessLookupError):
                    self._signal_target(self.stop_signal)
            if cg is not None:
                cg.signal(self.stop_signal)
            try:
                await asyncio.wait_for(child.wait_exited(), timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._signal_target(_signal.SIGKILL)
            else:
                if group:
                    # A shell leader often dies of the stop signal at once
                    # while its workers, which got it too, still shut down
                    # cleanly: wait for them until the deadline, rather than
                    # cut them short with the sweep below.
                    left = deadline - loop.time()
                    if left > 0:
                        members = _procfs.group_members(self.pid)
                        members_left = bool(members - {self.pid})
                        if members_left:
                            await _procfs.wait_gone(lambda: _procfs.group_members(self.pid), left)
            if cg is not None:
                # The same for the cgroup: what is still in it when the time
                # is up is killed at once, forks in flight included.
                left = deadline - loop.time()
                if left <= 0 or not await cg.wait_empty(left):
                    cg.kill()
                    await cg.wait_empty(None)
            if group:
                # The leader is a zombie (or about to die of SIGKILL) and not
                # reaped: the group id is still ours. Sweep what is left, and
                # see it gone before the id is let go.
                with contextlib.suppress(ProcessLookupError):
                    child.signal_group(self.pid, _signal.SIGKILL)
                if members_left:
                    await _procfs.wait_gone(lambda: _procfs.group_members(self.pid), None)
                child.unpin()
        status = await child.wait()
        if cg is not None:
            cg.remove()  # empty (a zombie does not count): removable
        return status

    # ------------------------------------------------------------------ pipes
    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:
        """Send ``input`` to stdin, read stdout and stderr to EOF, wait for exit.

        Returns ``(stdout, stderr)``; an entry is None when that stream is not
        a pipe. A child that stops reading stdin, or exits, does not make this
        fail: the unwritten rest of ``input`` is dropped.
        """
        out: list[bytes] = []
        err: list[bytes] = []
        await self._communicate(input, out, err)
        return (
            b"".join(out) if self.stdout is not None else None,
            b"".join(err) if self.stderr is not None else None,
        )

    async def _communicate(self, input: bytes | None, out: list[bytes], err: list[bytes]) -> None:
        if input is not None and self.stdin is None:
            raise ValueError("communicate(input=...) needs stdin=PIPE")
        jobs = []
        if self.stdin is not None:
            jobs.append(_feed(self.stdin, input))
        if self.stdout is not None:
            jobs.append(_collect(self.stdout, out))
        if self.stderr is not None:
            jobs.append(_collect(self.stderr, err))
        if jobs:
            await _gather_or_cancel(jobs)
        await self.wait()

    def _drain_available(self, out: list[bytes], err: list[bytes]) -> None:
        for stream, sink in ((self.stdout, out), (self.stderr, err)):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    sink.append(stream.read_available())

    def _close_pipes(self) -> None:
        if self.stdin is not None:
            self.stdin.abort()
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()

    # -------------------------------------------------------------- lifecycle
    async def aclose(self) -> None:
        """Stop the child if it still runs, close its pipes and reap it.

        Shielded: a cancellation of the caller does not abandon the child half-way;
        it is raised again once the child has been reaped.
        """
        await shielded(self._aclose())

    async def _aclose(self) -> None:
        try:
            if self.stdin is not None:
                self.stdin.close()
            if self._child.status is None or (
                self._cgroup is not None and not self._cgroup.removed
            ):
                await self.stop()
        finally:
            self._close_pipes()
            _live.pop(id(self), None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _close_sync(self) -> None:
        """No usable loop: kill (with ``kill_group``, the group) and reap; close the pipes."""
        _live.pop(id(self), None)
        try:
            child = self._child
            if child.status is None:
                if self.kill_group:
                    # As stop() does: the whole group, while the leader is
                    # unreaped (alive or a zombie), so its id is still ours.
                    with contextlib.suppress(ProcessLookupError):
                        child.signal_group(self.pid, _signal.SIGKILL)
                child.close_sync()
        finally:
            if self._cgroup is not None:
                _release_cgroup_sync(self._cgroup)
            for stream in (self.stdin, self.stdout, self.stderr):
                if stream is not None and not stream.closed:
                    _close_stream_sync(stream)

    def __del__(self) -> None:
        # A dropped Process must not leave an orphan or a zombie behind, nor
        # print anything: kill and reap synchronously.
        _live.pop(id(self), None)
        try:
            if self._child._status is None or (
                self._cgroup is not None and not self._cgroup.removed
            ):
                self._close_sync()
            elif self._stdin is not None or self._stdout is not None or self._stderr is not None:
                for stream in (self._stdin, self._stdout, self._stderr):
                    if stream is not None and not stream.closed:
                        _close_stream_sync(stream)
        except AttributeError:
            pass  # never initialized: Process() was called directly
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


def _release_cgroup_sync(cg: Cgroup) -> None:
    """Kill what is left in ``cg`` and remove it, without a loop (finalizers, failures)."""
    with contextlib.suppress(OSError):
        cg.kill()
        if cg.wait_empty_sync(5.0):
            cg.remove()


def _close_stream_sync(stream: ProcessReader | ProcessWriter) -> None:
    if isinstance(stream, ProcessWriter):
        stream.abort()
    else:
        stream.close()


async def _feed(stdin: ProcessWriter, data: bytes | None) -> None:
    try:
        if data:
            stdin.write(data)
            await stdin._wait_buffer(0)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the child stopped reading: what it did not take is dropped
    finally:
        stdin.close()


async def _collect(stream: ProcessReader, sink: list[bytes]) -> None:
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        sink.append(chunk)


async def _gather_or_cancel(coros: list[Any]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        if any(not t.done() for t in tasks):
            await asyncio.wait(tasks)


# -------------------------------------------------------------------- spawning
class _SpawnArgs(NamedTuple):
    """spawn()'s arguments as given, checked only when the spawn starts."""

    argv: Sequence[StrOrBytesPath] | StrOrBytesPath
    stdin: Redirect
    stdout: Redirect
    stderr: Redirect
    cwd: StrOrBytesPath | None
    env: Mapping[str, str] | Mapping[bytes, bytes] | None
    shell: bool
    start_new_session: bool
    process_group: int | None
    pass_fds: Sequence[int]
    user: str | int | None
    group: str | int | None
    umask: int
    stop_signal: int
    stop_timeout: float
    kill_group: bool
    limit: int
    pdeathsig: int | None
    close_fds: bool
    rlimits: Mapping[str, RlimitValue] | None
    cgroup: bool | str | os.PathLike[str] | None
    cgroup_limits: Mapping[str, int | float | str] | None


_new_args = tuple.__new__
_INF = float("inf")


class _Spawning:
    """What :func:`spawn` returns: await it, or use it as an async context manager.

    It only stores the arguments (a burst of spawns calls this once per task in
    a single loop iteration, so it must be cheap); they are checked by
    :meth:`_build`, which runs where the fork/exec step runs.
    """

    __slots__ = (
        "_args",
        "_cgroup",
        "_cgroup_procs",
        "_group_fallback",
        "_proc",
        "_started",
        "_stop_signal",
    )

    def __init__(self, args: _SpawnArgs) -> None:
        self._args = args
        self._started = False
        self._proc: Process | None = None
        self._stop_signal = 0
        # cgroup=: made by _build, handed to the Process by _finish; until
        # then ours to remove if the spawn fails (_drop_cgroup).
        self._cgroup: Cgroup | None = None
        self._cgroup_procs = -1
        self._group_fallback = False  # no cgroup v2: a process group instead

    def __await__(self) -> Generator[Any, None, Process]:
        # The one entry: `async with` comes here too. Kept flat (no helper
        # call), as a burst runs it once per task in a single loop iteration.
        if self._started:
            raise RuntimeError("this spawn() has already been started")
        self._started = True
        a = self._args
        if (
            type(a.stdin) is ProcessReader
            or type(a.stdout) is ProcessWriter
            or type(a.stderr) is ProcessWriter
        ):
            return self._start_handing_over().__await__()
        if a.cgroup is None:
            return self._start_plain().__await__()
        return self._start().__await__()

    async def _start_handing_over(self) -> Process:
        """``spawn(..., stdin=p1.stdout)``: the pipe goes to the new child.

        Our end of a pipe is non-blocking, and the child's copy would share
        that flag (one open file description): a program reading a
        non-blocking stdin fails with EAGAIN ("Resource temporarily
        unavailable"). So the descriptor is made blocking for the spawn (and
        busy for us meanwhile), and once the child has started our stream is
        closed: the child owns the pipe end from then on (with ours open,
        ``p1`` would not get SIGPIPE when ``p2`` exits early, and a read here
        would block the loop). If the spawn fails, the stream is left as it
        was.
        """
        a = self._args
        handed: list[ProcessReader | ProcessWriter] = []
        given: tuple[tuple[str, object, type], ...] = (
            ("stdin", a.stdin, ProcessReader),
            ("stdout", a.stdout, ProcessWriter),
            ("stderr", a.stderr, ProcessWriter),
        )
        try:
            for what, stream, cls in given:
                if type(stream) is cls:
                    assert isinstance(stream, (ProcessReader, ProcessWriter))
                    stream._hand_over(what)
                    handed.append(stream)
            proc = await self._start()
        except BaseException:
            for stream in handed:
                stream._handed(taken=False)
            raise
        for stream in handed:
            stream._handed(taken=True)
        return proc

    async def __aenter__(self) -> Process:
        return await self

    async def _start(self) -> Process:
        try:
            return await self._start_plain()
        finally:
            self._drop_cgroup()  # a cgroup not handed to a Process: the spawn failed

    def _drop_cgroup(self) -> None:
        if self._cgroup_procs >= 0:
            os.close(self._cgroup_procs)
            self._cgroup_procs = -1
        cg, self._cgroup = self._cgroup, None
        if cg is not None:
            _release_cgroup_sync(cg)

    async def _start_plain(self) -> Process:
        mode = _waiting.get_wait_mode()
        args = self._args
        inline = args.pdeathsig is not None
        build: Callable[[], SpawnSpec] = self._build
        loop = asyncio.get_running_loop()
        task = inline_allowed(loop, inline, args.user is not None or args.group is not None)
        if task is not None:
            spec = build()  # checked once, here, whatever happens next
            res = fork_here(spec, mode, loop, task)
            if res is None and must_stay_inline(inline):
                res = await fork_here_locked(spec, mode)
            if res is not None:
                proc = self._proc = self._finish(spec, res, loop)
                return proc

            def build() -> SpawnSpec:  # the fork lock was busy: the pool takes it
                return spec

        # A burst: hand the step to the spawn pool. Kept short on purpose, as
        # it runs once per spawning task in a single loop iteration.
        job = enqueue(build, mode, self._finish, loop)
        future = job.future
        assert future is not None
        try:
            result: Process = await future
        except asyncio.CancelledError:
            # A child that arrived just before the cancellation is killed
            # and reaped on the spot (SIGKILL, then a blocking reap, which
            # lasts as long as the kernel takes to end it).
            await cancelled(job, future, Process._close_sync)
            raise
        self._proc = result
        return result

    def _build(self) -> SpawnSpec:
        # Runs where the fork/exec step runs: inline on the loop, or on a spawn
        # worker, so a burst of spawns costs the loop almost nothing. Nothing
        # has been created yet when it raises.
        a = self._args
        if a.kill_group and a.process_group not in (None, 0):
            raise ValueError(
                "kill_group=True needs the child to lead its own group: "
                "leave process_group unset (or 0)"
            )
        stop_signal = a.stop_signal
        # The defaults (the common case) need no checking.
        self._stop_signal = (
            stop_signal
            if stop_signal is _signal.SIGTERM
            else _check_signal(stop_signal, "stop_signal", allow_zero=False)
        )
        stop_timeout = a.stop_timeout
        # The default (the common case) passes the first test. NaN fails it.
        if type(stop_timeout) is not float or not 0.0 <= stop_timeout < _INF:
            check_duration(stop_timeout, "stop_timeout")
        limit = a.limit
        if (type(limit) is not int or limit <= 0) and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0
        ):
            raise ValueError("limit must be a positive int")
        if a.cgroup is not None and a.cgroup is not False:
            return self._build_confined()
        if a.cgroup_limits is not None:
            raise ValueError("cgroup_limits needs cgroup=True (or a cgroup path)")
        return self._make_spec()

    def _build_confined(self) -> SpawnSpec:
        """_build with ``cgroup=``: check, make the cgroup, open its cgroup.procs."""
        a = self._args
        cgroup = a.cgroup
        if not (cgroup is True or cgroup == "auto" or isinstance(cgroup, (str, os.PathLike))):
            raise TypeError(f"cgroup must be True, 'auto' or a cgroup's path, not {cgroup!r}")
        limits = {} if a.cgroup_limits is None else _cgroup.check_cgroup_limits(a.cgroup_limits)
        spec = self._make_spec()  # every check passed before the cgroup is made
        name = os.path.basename(os.fsdecode(spec.args[0]))
        group, why = _cgroup.prepare(cgroup, name, limits)
        if group is None:
            assert why is not None
            _cgroup.warn_unavailable(why)
            self._group_fallback = True
            if spec.process_group < 0 and not spec.start_new_session:
                spec = spec._replace(process_group=0)
            return spec
        self._cgroup = group
        try:
            fd = os.open(os.path.join(group.path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        except BaseException:
            self._drop_cgroup()
            raise
        self._cgroup_procs = fd
        return spec._replace(cgroup_procs=fd)

    def _make_spec(self) -> SpawnSpec:
        a = self._args
        return make_spec(
            a.argv,
            stdin=a.stdin,
            stdout=a.stdout,
            stderr=a.stderr,
            cwd=a.cwd,
            env=a.env,
            shell=a.shell,
            start_new_session=a.start_new_session,
            process_group=0 if a.kill_group and not a.start_new_session else a.process_group,
            pass_fds=a.pass_fds,
            user=a.user,
            group=a.group,
            umask=a.umask,
            pdeathsig=a.pdeathsig,
            close_fds=a.close_fds,
            rlimits=a.rlimits,
        )

    def _finish(self, spec: SpawnSpec, res: Spawned, loop: asyncio.AbstractEventLoop) -> Process:
        # On the loop thread, right after the fork/exec step: start watching
        # the child and wrap its pipes. If that fails, nothing is left behind.
        a = self._args
        if self._cgroup_procs >= 0:  # the child is in its cgroup, or failed
            os.close(self._cgroup_procs)
            self._cgroup_procs = -1
        cgroup, self._cgroup = self._cgroup, None
        kill_group = a.kill_group or self._group_fallback
        try:
            _ensure_loop_hook(loop)
            child = _waiting.watch_child(res.pid, res.pidfd, loop)
        except BaseException:
            discard(res)
            if cgroup is not None:
                _release_cgroup_sync(cgroup)
            raise
        return Process._create(
            args=spec.args,
            child=child,
            stdin=None if res.stdin is None else ProcessWriter(res.stdin, loop),
            stdout=None if res.stdout is None else ProcessReader(res.stdout, loop, a.limit),
            stderr=None if res.stderr is None else ProcessReader(res.stderr, loop, a.limit),
            stop_signal=self._stop_signal,
            stop_timeout=float(a.stop_timeout),
            kill_group=kill_group,
            leads_group=bool(a.start_new_session) or a.process_group == 0,
            cgroup=cgroup,
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._proc is not None
        await self._proc.aclose()


def spawn(
    argv: Sequence[StrOrBytesPath] | StrOrBytesPath,
    *,
    stdin: Redirect = None,
    stdout: Redirect = None,
    stderr: Redirect = None,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[str, str] | Mapping[bytes, bytes] | None = None,
    shell: bool = False,
    start_new_session: bool = False,
    process_group: int | None = None,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    umask: int = -1,
    stop_signal: int = _signal.SIGTERM,
    stop_timeout: float = 5.0,
    kill_group: bool = False,
    limit: int = 2**16,
    pdeathsig: int | None = None,
    close_fds: bool = True,
    rlimits: Mapping[str, RlimitValue] | None = None,
    cgroup: bool | str | os.PathLike[str] | None = None,
    cgroup_limits: Mapping[str, int | float | str] | None = None,
) -> _Spawning:
    """Start a child process: ``proc = await spawn(argv)`` or ``async with spawn(argv) as proc``.

    ``argv`` is a sequence of str/bytes/PathLike (a bare string needs
    ``shell=True``). ``stdin``/``stdout``/``stderr`` take :data:`PIPE`,
    :data:`DEVNULL`, :data:`STDOUT` (stderr only), a file descriptor or a file
    object; None inherits ours. Another process's ``stdout`` as ``stdin``
    (or its ``stdin`` as ``stdout``/``stderr``) connects the two, as a shell
    pipe: that stream is handed to the new child and closed here once it has
    started. ``cwd``, ``env``, ``start_new_session``,
    ``process_group``, ``pass_fds``, ``user``, ``group`` and ``umask`` mean what
    they mean for :class:`subprocess.Popen`; every other descriptor is closed
    in the child, unless ``close_fds=False`` (then the child keeps those not
    marked close-on-exec, see :func:`os.set_inheritable`; a ``pass_fds``
    turns it back on, as with subprocess). One difference: as root, a ``user`` does not keep root's
    groups. A user in the password database gets its own primary group
    (unless ``group`` is given) and supplementary groups; a bare uid gets no
    supplementary groups. ``stop_signal`` and ``stop_timeout`` configure
    :meth:`Process.stop` and the context manager's exit. ``kill_group=True``
    makes the child lead a new process group (unless ``start_new_session``)
    and makes ``stop()``/``kill()`` signal the whole group. ``limit`` bounds
    the line length of ``readline()`` on the pipes.

    ``pdeathsig`` (Linux) asks the kernel to send that signal to the child
    when this process dies, however it dies (``signal.SIGKILL`` is the usual
    choice): the one protection that also holds when the parent is killed
    with SIGKILL or by the default SIGTERM action. Such a child is forked on
    the event loop's thread, since the kernel ties the signal to the thread
    that forked; with a loop in a thread other than the main one, the signal
    comes when that thread exits. A set-user-ID program clears it on exec.

    ``rlimits`` sets the child's resource limits before it executes, by name
    (``nofile``, ``nproc``, ``as``, ``cpu``, ``core``, ``fsize``, ``memlock``,
    ``stack``, ... : ``RLIMIT_`` dropped, lower case), each an int (soft and
    hard), ``None``/``"infinity"`` (unlimited) or a ``(soft, hard)`` pair.

    ``cgroup=True`` (or ``"auto"``) runs the child in a cgroup v2 of its own,
    made for it below ours and removed once it is empty; a path names the
    cgroup directory to use (made if missing). The child joins it before it
    executes, and :meth:`Process.stop` (and the end of ``async with``) kills
    the whole cgroup, ``setsid`` and double-forked descendants included (see
    :attr:`Process.cgroup`). ``cgroup_limits`` sets ``memory_max``
    (bytes, or "512M"), ``cpu_max`` (CPUs, like 0.5) and ``pids_max``; each
    needs its controller enabled for the cgroup, or the spawn fails with an
    error naming it. Without a writable cgroup v2 hierarchy ``cgroup=True``
    logs a warning once (``aioproc`` logger) and uses a process group
    (``kill_group=True``) instead.

    Bad arguments raise ``TypeError``/``ValueError`` when the result is awaited
    (or entered), before anything is created; failures of the fork/exec step
    raise ``OSError`` subclasses (``FileNotFoundError`` naming the program or
    cwd, ``PermissionError``...).
    In every case nothing is left behind.
    """
    if not close_fds and pass_fds:
        # As subprocess.Popen, in its words: pass_fds closes the others.
        warnings.warn("pass_fds overriding close_fds.", RuntimeWarning, stacklevel=2)
    # tuple.__new__ rather than _SpawnArgs(...): the named tuple's own
    # __new__ is a Python function, and a burst calls this once per task in
    # a single loop iteration (see _Spawning).
    return _Spawning(
        _new_args(
            _SpawnArgs,
            (
                argv,
                stdin,
                stdout,
                stderr,
                cwd,
                env,
                shell,
                start_new_session,
                process_group,
                pass_fds,
                user,
                group,
                umask,
                stop_signal,
                stop_timeout,
                kill_group,
                limit,
                pdeathsig,
                close_fds,
                rlimits,
                cgroup,
                cgroup_limits,
            ),
        )
    )


# ------------------------------------------------- children outliving their loop
# Processes that may still have a running child, by id. Weak references, so
# that a dropped process is freed (and its __del__ runs); __del__ takes its own
# entry out, so a plain dict of plain weak references does: a
# WeakValueDictionary's Python-level bookkeeping cost ~3 us per spawn.
_live: dict[int, weakref.ReferenceType[Process]] = {}
# The loops whose shutdown we watch for, by id: a weak reference each, checked
# on every spawn (an id may be reused once its loop is gone).
_hooked: dict[int, weakref.ReferenceType[asyncio.AbstractEventLoop]] = {}
_hook_lock = threading.Lock()


def _reap_orphans(loop: asyncio.AbstractEventLoop | None) -> None:
    """Kill and reap, synchronously, every live child of ``loop`` (all if None)."""
    for ref in list(_live.values()):
        proc = ref()
        if proc is not None and (loop is None or proc._child.loop is loop):
            with contextlib.suppress(Exception):
                proc._close_sync()


async def _loop_shutdown_sentinel(
    loop_ref: weakref.ReferenceType[asyncio.AbstractEventLoop],
) -> AsyncGenerator[None, None]:
    # The loop calls aclose() on every async generator it has seen when it
    # shuts down (asyncio.run() and uvloop.run() do, via shutdown_asyncgens()),
    # after the tasks have been cancelled. That is our cue that the loop is
    # going away: any child still running now would outlive it.
    try:
        yield
    finally:
        loop = loop_ref()
        if loop is not None:
            _reap_orphans(loop)
            _waiting.close_watcher(loop)


class _ClosedLoopReaper:
    """Owned by a loop (``owned_by_loop``): freed when the loop is closed, it
    kills and reaps that loop's children that still run.

    A loop closed without a shutdown (no ``shutdown_asyncgens()``, so the
    sentinel below never ran) would otherwise leave children running whose
    ``Process`` objects are still referenced: nothing can wait for them any
    more (their loop is gone), and they would outlive it as orphans. A loop
    collected without being closed has no such children: each holds its loop.
    """

    __slots__ = ("_loop_ref",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop_ref = weakref.ref(loop)

    def __del__(self) -> None:
        loop = self._loop_ref()
        if loop is not None:
            with contextlib.suppress(Exception):  # late in interpreter shutdown
                _reap_orphans(loop)


def _ensure_loop_hook(loop: asyncio.AbstractEventLoop) -> None:
    ref = _hooked.get(id(loop))
    if ref is not None and ref() is loop:
        return
    with _hook_lock:
        ref = _hooked.get(id(loop))
        if ref is not None and ref() is loop:
            return
        # First, what can fail (no descriptor free): the sentinel and the
        # reaper must not exist unowned, or their finalizers would take the
        # loop for shut down.
        anchor_loop(loop)
        owned_by_loop(loop, _ClosedLoopReaper(loop))
        agen = _loop_shutdown_sentinel(weakref.ref(loop))
        step = agen.__anext__()
        with contextlib.suppress(StopIteration):
            step.send(None)  # runs to the yield; the loop's firstiter hook sees it
        # Who keeps the sentinel alive: the loop itself only keeps async
        # generators weakly, and one that is collected early gets closed,
        # which would look like a shutdown. The sentinel in turn holds the
        # loop (its finalizer hook is a bound method of the loop), so a
        # module-level reference would keep every loop alive forever. So the
        # loop owns it: a cycle that the loop's close() breaks, after which a
        # dropped loop is freed, and its watcher closed, like any other object.
        owned_by_loop(loop, agen)
        _hooked[id(loop)] = weakref.ref(loop, _forget_hook(id(loop)))


def _forget_hook(key: int) -> Callable[[weakref.ReferenceType[Any]], None]:
    def forget(ref: weakref.ReferenceType[Any]) -> None:
        if _hooked.get(key) is ref:
            del _hooked[key]

    return forget


def _reap_all_at_exit() -> None:
    _reap_orphans(None)


atexit.register(_reap_all_at_exit)


def _after_fork_in_child() -> None:
    # The children belong to the parent process; we must not touch them.
    _live.clear()
    _hooked.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
