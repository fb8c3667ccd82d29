# The optional C accelerator (_clone_exec.c); _spawn/_direct.py falls back to
# _posixsubprocess.fork_exec without it.
from collections.abc import Iterable

def spawn(
    args: list[bytes],
    executables: tuple[bytes, ...],
    env: list[bytes] | None,
    cwd: bytes | None,
    stdin: int | None,
    stdout: int | None,
    stderr: int | None,
    pass_fds: tuple[int, ...] | None,  # None: close_fds=False
    start_new_session: bool,
    process_group: int,
    umask: int,
    pdeathsig: int,
    rlimits: tuple[tuple[int, int, int], ...] = (),
    cgroup_procs: int = -1,
    /,
) -> tuple[int, int, int | None, int | None, int | None] | tuple[str, int]: ...
def set_child_mask(signals: Iterable[int], /) -> None: ...
def stacks_kept() -> int: ...
