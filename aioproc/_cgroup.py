"""cgroup v2 containment: a cgroup per child, killed whole, waited empty.

``spawn(argv, cgroup=True)`` runs the child in a cgroup of its own, made for it
(``aioproc-PID-NAME-N`` below our own cgroup) and removed once it is empty;
``cgroup="/path/of/a/cgroup"`` names one (made if missing, and then removed
too). The child is placed in it race-free: the fork/exec step opens the
cgroup's ``cgroup.procs`` and the child writes ``0`` (itself) there between the
fork and the exec, before the program runs, so nothing it forks can start
outside (``_spawn/``: the C step and the fallback's ``preexec_fn``).
Everything it starts stays in the cgroup, ``setsid`` and double forks
included, so :meth:`Cgroup.kill` (``cgroup.kill``, Linux 5.14; before that,
freeze and SIGKILL every member) ends all of it, and :meth:`Cgroup.wait_empty`
waits for ``cgroup.events`` to say ``populated 0``.

Where the cgroup2 file system is mounted is read from ``/proc/self/mountinfo``
(never assumed: a hybrid system mounts it at ``/sys/fs/cgroup/unified``), and
our own cgroup from ``/proc/self/cgroup``. Without a writable cgroup2 hierarchy,
``cgroup=True`` says so once (a warning on the ``aioproc`` logger) and falls
back to process groups (``kill_group=True``).

Limits (``cgroup_limits``: ``memory_max``, ``cpu_max``, ``pids_max``) need their
controller (memory, cpu, pids) enabled for the new cgroup: listed in the
parent's ``cgroup.subtree_control``, or listed in its ``cgroup.controllers``
so that it can be enabled there. Otherwise the spawn fails before anything
runs, with an error naming the missing controller.

A leaf module (it uses only ``_procfs``, another leaf).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Mapping

from ._procfs import pidfd_open_ex, wait_gone
from ._sizes import parse_size

__all__ = ["Cgroup", "CgroupLimits", "cgroup_root", "check_cgroup_limits", "prepare"]

log = logging.getLogger("aioproc")

#: Switches for the tests: a reason string forces "no writable cgroup v2";
#: False makes kill() use the fallback of kernels without cgroup.kill.
forced_unavailable: str | None = None
use_cgroup_kill = True

# (our cgroup's directory or None, why not, the mount point, the mount's root path)
_root: tuple[str | None, str, str, str] | None = None
_root_lock = threading.Lock()
_warned = False
_counter = itertools.count(1)

CgroupLimits = dict[str, str]  # file name -> value to write, checked


# ------------------------------------------------------------------ finding it
def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _find_root() -> tuple[str | None, str, str, str]:
    try:
        with open("/proc/self/cgroup") as f:
            ours = next(
                (line.rstrip("\n")[3:] for line in f if line.startswith("0::")),
                None,
            )
        with open("/proc/self/mountinfo") as f:
            mounts = f.read().splitlines()
    except OSError as exc:
        return None, f"cannot read /proc: {exc}", "", ""
    if ours is None:
        why = "this process is in no cgroup v2 hierarchy (/proc/self/cgroup has no 0:: line)"
        return None, why, "", ""
    found = []
    for line in mounts:
        left, sep, right = line.partition(" - ")
        if not sep or not right.startswith("cgroup2 "):
            continue
        fields = left.split()
        root, point = _unescape(fields[3]), _unescape(fields[4])
        if ours == root or ours.startswith(root.rstrip("/") + "/"):
            rel = ours[len(root.rstrip("/")) :].lstrip("/")
            found.append((os.path.join(point, rel) if rel else point, point, root))
    if not found:
        return None, "no cgroup2 file system is mounted (see /proc/self/mountinfo)", "", ""
    for path, point, root in found:
        if os.access(os.path.join(path, "cgroup.procs"), os.W_OK) and os.access(path, os.W_OK):
            return path, "", point, root
    return None, f"the cgroup2 hierarchy at {found[0][0]} is not writable by this process", "", ""


def _hierarchy() -> tuple[str | None, str, str, str]:
    global _root
    if _root is None:
        with _root_lock:
            if _root is None:
                _root = _find_root()
    return _root


def cgroup_root() -> tuple[str | None, str]:
    """Our own cgroup's directory in a writable cgroup2 mount, or None and why not."""
    if forced_unavailable is not None:
        return None, forced_unavailable
    ours, why, _, _ = _hierarchy()
    return ours, why


def directory_of(pid: int) -> str | None:
    """The directory of the cgroup (v2) that ``pid`` is in, or None."""
    _, _, point, root = _hierarchy()
    if not point:
        return None
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            line = next((x for x in f if x.startswith("0::")), None)
    except OSError:
        return None
    if line is None:
        return None
    path = line[3:].rstrip("\n")
    base = root.rstrip("/")
    if path != root and not path.startswith(base + "/"):
        return None
    rel = path[len(base) :].lstrip("/")
    return os.path.join(point, rel) if rel else point


def warn_unavailable(why: str) -> None:
    """Say once per process that cgroup=True falls back to process groups."""
    global _warned
    if not _warned:
        _warned = True
        log.warning(
            "aioproc: no writable cgroup v2 hierarchy (%s): cgroup=True falls back to "
            "process groups, which a child that calls setsid() can leave",
            why,
        )


# ------------------------------------------------------------------ limits
_CONTROLLERS = {"memory_max": "memory", "cpu_max": "cpu", "pids_max": "pids"}


def _limit_error(key: str, value: object, expected: str) -> ValueError:
    return ValueError(f"cgroup_limits[{key!r}]: {value!r} is not {expected}")


def check_cgroup_limits(limits: object) -> CgroupLimits:
    """Check ``cgroup_limits`` and return ``{file name: value}``. Creates nothing.

    ``memory_max``: bytes (an int, or a string like "512M"), or "max";
    ``pids_max``: an int >= 1, or "max"; ``cpu_max``: CPUs (a number like
    0.5), or "max", or cgroup's own "QUOTA PERIOD" in microseconds.
    """
    if not isinstance(limits, Mapping):
        raise TypeError(f"cgroup_limits must be a mapping, not {type(limits).__name__}")
    out: CgroupLimits = {}
    for key, value in limits.items():
        if key not in _CONTROLLERS:
            known = ", ".join(sorted(_CONTROLLERS))
            raise ValueError(f"cgroup_limits: unknown limit {key!r} (known: {known})")
        if isinstance(value, bool):
            raise _limit_error(key, value, "a limit")
        if value == "max":
            text = "max"
        elif key == "memory_max":
            if isinstance(value, int) and 0 <= value < 2**63:
                text = str(value)
            elif isinstance(value, str) and (size := parse_size(value)) is not None:
                text = str(size)
            else:
                raise _limit_error(key, value, 'a size in bytes, like 536870912 or "512M"')
        elif key == "pids_max":
            if not isinstance(value, int) or not 1 <= value < 2**31:
                raise _limit_error(key, value, "a number of processes (1 or more)")
            text = str(value)
        elif isinstance(value, (int, float)):
            if not 0 < value <= 100000 or value != value:  # NaN
                raise _limit_error(key, value, "a positive number of CPUs")
            text = f"{max(1000, round(value * 100000))} 100000"
        elif isinstance(value, str) and re.fullmatch(r"(\d+|max) \d+", value):
            text = value
        else:
            raise _limit_error(key, value, 'a number of CPUs, "max" or "QUOTA PERIOD"')
        out[key.replace("_", ".")] = text
    return out


# ------------------------------------------------------------------ the cgroup
class Cgroup:
    """A cgroup (v2) that holds a child and everything it starts.

    Made by :func:`prepare` for ``spawn(cgroup=...)``; ``Process.cgroup``.
    """

    __slots__ = ("_removed", "created", "path")

    def __init__(self, path: str, created: bool) -> None:
        #: The cgroup's directory.
        self.path = path
        #: Whether aioproc made it (and so removes it once it is empty).
        self.created = created
        self._removed = False

    def __repr__(self) -> str:
        return f"<aioproc.Cgroup {self.path}>"

    def _file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def populated(self) -> bool:
        """Whether a live process is in the cgroup (or one below it): ``cgroup.events``."""
        try:
            with open(self._file("cgroup.events")) as f:
                for line in f:
                    if line.startswith("populated "):
                        return line.split()[1] != "0"
        except FileNotFoundError:
            return False
        return False  # pragma: no cover - every cgroup but the root has cgroup.events

    def members(self) -> list[int]:
        """The processes in the cgroup and the cgroups below it, by PID."""
        pids: set[int] = set()
        for directory, _, _ in os.walk(self.path):
            with (
                contextlib.suppress(FileNotFoundError),
                open(os.path.join(directory, "cgroup.procs")) as f,
            ):
                pids.update(int(line) for line in f if line.strip())
        return sorted(pids)

    def _holds(self, pid: int) -> bool:
        """Whether ``pid`` is in this cgroup (or below it), by /proc/PID/cgroup."""
        where = directory_of(pid)
        if where is None:
            return False
        return where == self.path or where.startswith(self.path.rstrip("/") + "/")

    def signal(self, sig: int) -> int:
        """Send ``sig`` to every process in the cgroup; return how many got it.

        PID-safe: each process is opened as a pidfd, and only then checked to
        be in the cgroup, so a PID reused meanwhile is not signalled. A process
        forked after the listing is missed: :meth:`kill` does not miss any.
        """
        sent = 0
        for pid in self.members():
            fd = pidfd_open_ex(pid)
            if fd < 0:
                if fd != -1 and self._holds(pid):  # no pidfds: best effort by PID
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                        sent += 1
                continue
            try:
                if self._holds(pid):
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, sig)
                        sent += 1
            finally:
                os.close(fd)
        return sent

    def kill(self) -> None:
        """SIGKILL everything in the cgroup, forks in flight included.

        ``cgroup.kill`` does it in one step in the kernel. Without it (before
        Linux 5.14) the cgroup is frozen (5.2), every member gets SIGKILL, and
        it is thawed, until no member is left; without a freezer a fork bomb
        could outrun that loop, so it gives up after 100 rounds.
        """
        if self._removed:
            return
        if use_cgroup_kill:
            try:
                with open(self._file("cgroup.kill"), "w") as f:
                    f.write("1")
                return
            except FileNotFoundError:
                if not os.path.isdir(self.path):
                    return
        for _ in range(100):
            members = self.members()
            if not members:
                return
            frozen = self._freeze(True)
            try:
                self.signal(signal.SIGKILL)
            finally:
                if frozen:
                    self._freeze(False)

    def _freeze(self, on: bool) -> bool:
        try:
            with open(self._file("cgroup.freeze"), "w") as f:
                f.write("1" if on else "0")
        except OSError:
            return False
        return True

    async def wait_empty(self, timeout: float | None) -> bool:
        """Wait until ``cgroup.events`` says ``populated 0``; False on timeout.

        Between looks it waits on pidfds of the members it found (readable
        when they exit), so it does not spin; a look that finds members with
        no pidfd (pidfds refused) sleeps a little, backing off to 50 ms.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self.populated:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            found = set(self.members())
            if found:
                await wait_gone(lambda f=found: f & set(self.members()), left)  # type: ignore[misc]
            else:
                # Populated, yet no process listed: the last ones are exiting.
                await asyncio.sleep(0.001 if left is None else min(0.001, left))
        return True

    def wait_empty_sync(self, timeout: float) -> bool:
        """:meth:`wait_empty` without a loop (finalizers): polls, up to ``timeout``."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.populated:
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return True

    def remove(self) -> None:
        """Remove the cgroup (and any below it) if aioproc made it. Only once empty.

        A failure (the cgroup is not empty after all) is logged, not raised:
        this runs at the end of a stop, which has done its job.
        """
        if not self.created:
            self._removed = True  # not ours to remove: only done with
        if self._removed:
            return
        try:
            for directory, _, _ in sorted(os.walk(self.path), key=lambda w: -len(w[0])):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(directory)
        except OSError as exc:
            log.warning("aioproc: cannot remove the cgroup %s: %s", self.path, exc.strerror)
            return
        self._removed = True

    @property
    def removed(self) -> bool:
        """Whether the child's stop is over: the cgroup removed (or, not made by us, left)."""
        return self._removed or not os.path.isdir(self.path)


# ------------------------------------------------------------------ making one
def _enable(parent: str, controller: str, key: str) -> None:
    """Make ``controller`` available to the children of ``parent``, or say why not."""
    try:
        with open(os.path.join(parent, "cgroup.subtree_control")) as f:
            if controller in f.read().split():
                return
        with open(os.path.join(parent, "cgroup.controllers")) as f:
            available = f.read().split()
    except OSError as exc:
        raise OSError(exc.errno, f"cgroup_limits: {exc.strerror}", parent) from None
    if controller in available:
        try:
            with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                f.write(f"+{controller}")
            return
        except OSError as exc:
            why = f"enabling it in {parent}/cgroup.subtree_control failed: {exc.strerror}"
    else:
        listed = " ".join(available) or "none"
        why = f"it is not delegated to {parent} (its cgroup.controllers: {listed})"
    raise OSError(
        errno.EOPNOTSUPP,
        f"cgroup_limits[{key!r}] needs the {controller} controller, and {why}",
    )


def prepare(cgroup: object, name: str, limits: CgroupLimits) -> tuple[Cgroup | None, str | None]:
    """Make (or find) the cgroup for a spawn and set its limits.

    Returns ``(cgroup, None)``, or ``(None, why)`` when ``cgroup`` is True or
    "auto" and no writable cgroup v2 exists (the caller falls back to a process
    group). A named cgroup that cannot be used, or limits that cannot be set,
    raise OSError, with whatever was made here removed again.
    """
    root, why = cgroup_root()
    if cgroup is True or cgroup == "auto":
        if root is None:
            if limits:
                raise OSError(errno.EOPNOTSUPP, f"cgroup_limits need a cgroup: {why}")
            return None, why
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40] or "child"
        path = os.path.join(root, f"aioproc-{os.getpid()}-{safe}-{next(_counter)}")
    else:
        path = os.fsdecode(os.path.abspath(os.fspath(cgroup)))  # type: ignore[call-overload]
    created = False
    try:
        os.mkdir(path)
        created = True
    except FileExistsError:
        pass
    group = Cgroup(path, created)
    try:
        if not os.path.exists(os.path.join(path, "cgroup.procs")):
            raise OSError(errno.ENOTDIR, "not a cgroup v2 directory (no cgroup.procs)", path)
        parent = os.path.dirname(path)
        for key, value in limits.items():
            _enable(parent, key.split(".")[0], key.replace(".", "_"))
            with open(os.path.join(path, key), "w") as f:
                f.write(value)
    except BaseException:
        group.remove()
        raise
    return group, None
