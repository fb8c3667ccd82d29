/* aioproc._clone_exec: the whole fork/exec step of a spawn in one call, GIL released.
 *
 * An optional accelerator for aioproc/_spawn/, which falls back to CPython's
 * _posixsubprocess.fork_exec (plus an error pipe and pidfd_open) when this
 * module is not built, or for what it does not cover (user/group changes, and
 * spawns waited on by PID).
 *
 * Why it exists: in a storm of concurrent spawns on a small machine the CPU is
 * the bottleneck, and the Python around fork_exec (pipes, the error pipe and
 * its read, pidfd_open, the signal-mask switches, argument conversion) cost a
 * spawn worker about as much CPU as the fork itself, all of it holding the
 * GIL the event loop needs. Here one call makes the pipes, clones the child
 * and learns the outcome of its exec with the GIL released throughout, and
 * without the error pipe:
 *
 *  - clone(CLONE_VM | CLONE_VFORK): the child runs in our memory until its
 *    exec, as with vfork, and we resume when the exec has passed its point of
 *    no return or the child has exited. A failure before that point is written
 *    into a struct in our shared memory (as glibc's posix_spawn does), so it is
 *    known the moment we resume. An error pipe's close-on-exec write end, in
 *    contrast, closes a little after that point, and a preempted child made
 *    the parent wait for it (see _Started in _spawn/_workers.py).
 *  - CLONE_PIDFD: the pidfd comes with the child, atomically; no pidfd_open,
 *    and no moment in which the child exists without one.
 *  - CLONE_FILES: the descriptor table is not copied for the child; the child
 *    takes a private copy of the descriptors numbered up to the highest one it
 *    keeps (close_range with CLOSE_RANGE_UNSHARE), usually a handful: the
 *    descriptors above it, however many, cost nothing. Live children's pidfds
 *    are moved above PIDFD_FLOOR so that they stay out of that copy.
 *  - The parent-death signal and the process group are set in the child here,
 *    so they need no preexec_fn (which costs CPython its vfork) on any Python.
 *
 * The child shares our memory, our TLS and (until it execs) our signal
 * handlers' code, so between clone and exec it may only make system calls:
 * no malloc, no locks, nothing glibc might have half-updated in another
 * thread. It resets every caught signal to SIG_DFL before it unblocks any,
 * since a handler run in the child would write into the parent's memory
 * (CPython's handler sets flags and writes to the wakeup fd).
 *
 * Not covered, and left to the fallback: setuid/setgid/setgroups. glibc
 * applies those to every thread of the process with a signal broadcast, which
 * is wrong in a child that shares the parent's memory but not its threads.
 * Raw system calls would change only the child's credentials, but the kernel
 * (commit_creds) then marks the *mm* non-dumpable, and until the exec that mm
 * is ours: the parent would lose core dumps and ptrace access for good
 * (PR_GET_DUMPABLE went from 1 to 0 in a test here). A real fork is needed,
 * and doing it here (clone without CLONE_VM, the GIL released) gained
 * nothing: with 1.5 GB resident, four such spawns stalled the event loop
 * 80-110 ms either way, since while fork copies the page tables the kernel
 * holds every other thread that writes to memory (the write-protect faults
 * wait for the copy to finish), GIL or no GIL.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

extern char **environ;

/* Where the child failed, for the message the parent builds. */
enum stage {
    STAGE_NONE = 0,
    STAGE_NOEXEC,
    STAGE_CHDIR,
    STAGE_EXEC,
    STAGE_CLOSE_RANGE,
    STAGE_SETRLIMIT, /* rlimits (see the block "resource limits" below) */
    STAGE_CGROUP,    /* cgroup= (see the block "cgroup placement" below) */
};

/* ---- resource limits (rlimits=): one entry per limit, set in the child ---- */
struct child_rlimit {
    int resource;
    uint64_t soft, hard; /* RLIM_INFINITY for unlimited */
};
/* ---- end of resource limits ---- */

/* Everything the child needs, prepared by the parent while it holds the GIL,
   plus the report the child leaves behind when it fails. The parent reads the
   report only after clone returned, that is after the child exec'd or exited. */
struct job {
    char *const *argv;
    char *const *executables;
    Py_ssize_t n_executables;
    char *const *envp; /* NULL: the parent's environ */
    const char *cwd;
    int p2cread, c2pwrite, errwrite; /* -1: inherit */
    const int *pass_fds;             /* sorted, no duplicates */
    Py_ssize_t n_pass_fds;
    int close_fds; /* 0: keep every inheritable descriptor (pass_fds is empty) */
    int start_new_session;
    int process_group; /* -1: leave alone */
    int umask;         /* -1: leave alone */
    int pdeathsig;     /* 0: none */
    const struct child_rlimit *rlimits; /* rlimits= (none: n_rlimits 0) */
    Py_ssize_t n_rlimits;
    int cgroup_procs; /* cgroup placement: an open cgroup.procs, or -1 */
    pid_t parent;
    sigset_t child_mask;
    volatile int fail_stage;
    volatile int fail_errno;
};

/* The mask a child of this thread starts with. A spawn worker keeps every
   signal blocked, so its children must be given the process's normal mask
   instead of inheriting the worker's; set_child_mask() records it. Other
   threads (the event loop's, for inline spawns) leave it unset: their
   children get the mask the thread had when it called spawn(). */
static __thread sigset_t thread_child_mask;
static __thread int thread_child_mask_set;

static int
clear_cloexec(int fd)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) {
        return -1;
    }
    if (flags & FD_CLOEXEC) {
        return fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
    }
    return 0;
}

static int
close_range_raw(unsigned int first, unsigned int last, unsigned int flags)
{
    return (int)syscall(SYS_close_range, first, last, flags);
}

/* Put `fd` at `target` for the exec: dup2 it there (the copy is not
   close-on-exec), or, when it is there already, clear its close-on-exec flag.
   -1: leave `target` alone. */
static int
move_to(int fd, int target)
{
    if (fd == -1) {
        return 0;
    }
    if (fd == target) {
        return clear_cloexec(target);
    }
    return dup2(fd, target) < 0 ? -1 : 0;
}

static void
reset_caught_signals(const sigset_t *stays_blocked)
{
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) {
            continue;
        }
        /* Python ignores these two at startup; a child gets them back at
           their defaults (subprocess's restore_signals). */
        if (sig == SIGPIPE || sig == SIGXFSZ) {
            (void)sigaction(sig, &dfl, NULL);
            continue;
        }
        /* A signal that stays blocked up to the exec cannot run a handler
           here, and the exec resets its disposition itself. */
        if (sigismember(stays_blocked, sig) == 1) {
            continue;
        }
        struct sigaction old;
        /* glibc answers EINVAL for the signals it uses internally. */
        if (sigaction(sig, NULL, &old) != 0) {
            continue;
        }
        void *handler = (old.sa_flags & SA_SIGINFO) ? (void *)old.sa_sigaction
                                                    : (void *)old.sa_handler;
        if (handler == (void *)SIG_IGN || handler == (void *)SIG_DFL) {
            continue;
        }
        (void)sigaction(sig, &dfl, NULL);
    }
}

/* The child, on its own small stack, in our memory. System calls only. */
static int
child_main(void *arg)
{
    struct job *job = arg;
    int p2cread = job->p2cread, c2pwrite = job->c2pwrite, errwrite = job->errwrite;
    int stage = STAGE_NOEXEC;

    /* We share the parent's descriptor table (CLONE_FILES), so before
       anything here touches a descriptor, take a private table: close_range
       with CLOSE_RANGE_UNSHARE from just above the highest descriptor the
       child keeps copies only the ones below it. A plain clone would copy the
       whole table in the parent (~2 us per 100 open descriptors here, and a
       server may have thousands), and the child would then close them all.
       Descriptors another thread opens meanwhile are closed below with the
       rest; the ones this call made are closed by no one before it returns.
       With close_fds=False the child keeps every inheritable descriptor, so
       it takes a copy of the whole table instead, as fork would. */
    if (!job->close_fds) {
        if (syscall(SYS_unshare, CLONE_FILES) != 0) {
            goto fail;
        }
        goto unshared;
    }
    int keep_max = 2;
    if (p2cread > keep_max) {
        keep_max = p2cread;
    }
    if (c2pwrite > keep_max) {
        keep_max = c2pwrite;
    }
    if (errwrite > keep_max) {
        keep_max = errwrite;
    }
    if (job->n_pass_fds > 0 && job->pass_fds[job->n_pass_fds - 1] > keep_max) {
        keep_max = job->pass_fds[job->n_pass_fds - 1];
    }
    if (job->cgroup_procs > keep_max) { /* cgroup placement: written below */
        keep_max = job->cgroup_procs;
    }
    if (close_range_raw((unsigned int)keep_max + 1, ~0U, CLOSE_RANGE_UNSHARE) != 0) {
        stage = STAGE_CLOSE_RANGE; /* the caller falls back if it is not supported */
        goto fail;
    }

unshared:
    /* ---- cgroup placement (cgroup=): first, before this child can do
       anything else, move it into its cgroup by writing "0" (the writer) to
       the cgroup's cgroup.procs, opened by the parent. The program is not
       running yet, so nothing it forks can start outside the cgroup: the
       same guarantee as clone3's CLONE_INTO_CGROUP, without clone3 (which
       cannot run a function on a new stack with CLONE_VM from C). The
       descriptor is close-on-exec and closed below with the others. ---- */
    if (job->cgroup_procs >= 0 && write(job->cgroup_procs, "0", 1) != 1) {
        stage = STAGE_CGROUP;
        goto fail;
    }
    /* ---- end of cgroup placement ---- */

    reset_caught_signals(&job->child_mask);
    if (sigprocmask(SIG_SETMASK, &job->child_mask, NULL) != 0) {
        goto fail;
    }
    if (job->pdeathsig) {
        if (prctl(PR_SET_PDEATHSIG, job->pdeathsig, 0, 0, 0) != 0) {
            goto fail;
        }
        /* The parent may have died before the prctl, and then the kernel
           never sends the signal: send it ourselves, as the kernel would have
           (the handlers are at their defaults now; a blocked signal stays
           pending into the new program, as it would have). */
        if (getppid() != job->parent) {
            (void)kill(getpid(), job->pdeathsig);
        }
    }

    /* Stdio, as CPython's child does it: move a descriptor that sits where
       another one must go out of the way first (dup clears close-on-exec on
       the copy; the original is closed below with the rest). */
    if (c2pwrite == 0) {
        if ((c2pwrite = dup(c2pwrite)) < 0) {
            goto fail;
        }
    }
    while (errwrite == 0 || errwrite == 1) {
        if ((errwrite = dup(errwrite)) < 0) {
            goto fail;
        }
    }
    if (move_to(p2cread, 0) != 0 || move_to(c2pwrite, 1) != 0 || move_to(errwrite, 2) != 0) {
        goto fail;
    }

    if (job->cwd != NULL && chdir(job->cwd) != 0) {
        stage = STAGE_CHDIR;
        goto fail;
    }
    if (job->umask >= 0) {
        (void)umask((mode_t)job->umask);
    }
    if (job->start_new_session && setsid() < 0) {
        goto fail;
    }
    if (job->process_group >= 0 && setpgid(0, job->process_group) != 0) {
        goto fail;
    }

    /* close_fds: everything from 3 up except pass_fds, which become
       inheritable. Our own descriptors, the pipes' originals included, go
       here; the sorted list makes the gaps. (Without close_fds, ours are all
       close-on-exec: the exec closes them.) */
    if (!job->close_fds) {
        goto run_exec;
    }
    unsigned int next = 3;
    for (Py_ssize_t i = 0; i < job->n_pass_fds; i++) {
        int fd = job->pass_fds[i];
        if (clear_cloexec(fd) != 0) {
            goto fail;
        }
        if (fd < 3) {
            continue;
        }
        if ((unsigned int)fd > next && close_range_raw(next, (unsigned int)fd - 1, 0) != 0) {
            stage = STAGE_CLOSE_RANGE;
            goto fail;
        }
        next = (unsigned int)fd + 1;
    }
    if (close_range_raw(next, ~0U, 0) != 0) {
        stage = STAGE_CLOSE_RANGE;
        goto fail;
    }

run_exec:
    /* ---- resource limits: last before the exec, so that a low nofile or
       nproc limit cannot get in the way of the steps above. A raw prlimit64
       on ourselves (pid 0): a plain system call, and the limits belong to
       this process alone (no CLONE_THREAD), not to the parent whose memory
       we share. ---- */
    for (Py_ssize_t i = 0; i < job->n_rlimits; i++) {
        struct rlimit64 {
            uint64_t cur, max;
        } lim = {job->rlimits[i].soft, job->rlimits[i].hard};
        if (syscall(SYS_prlimit64, 0, job->rlimits[i].resource, &lim, NULL) != 0) {
            stage = STAGE_SETRLIMIT;
            goto fail;
        }
    }
    /* ---- end of resource limits ---- */

    /* The PATH search of subprocess and os.execvpe: report the first error
       that is not "not there", else the last. */
    stage = STAGE_EXEC;
    char *const *envp = job->envp != NULL ? job->envp : environ;
    int saved = 0;
    for (Py_ssize_t i = 0; i < job->n_executables; i++) {
        execve(job->executables[i], job->argv, envp);
        if (errno != ENOENT && errno != ENOTDIR && saved == 0) {
            saved = errno;
        }
    }
    if (saved != 0) {
        errno = saved;
    }

fail:
    job->fail_errno = errno ? errno : EINVAL;
    job->fail_stage = stage;
    _exit(127);
    return 0;
}

/* PyLong_AsInt is public from 3.13 only. */
static int
as_int(PyObject *o)
{
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < INT_MIN || v > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "Python int too large to convert to C int");
        return -1;
    }
    return (int)v;
}

/* Holds references and C arrays for the duration of one call. */
struct buffers {
    PyObject *args_fast, *exe_fast, *env_fast;
    char **argv, **executables, **envp;
    int *pass_fds;
    struct child_rlimit *rlimits;
};

static void
buffers_free(struct buffers *b)
{
    Py_XDECREF(b->args_fast);
    Py_XDECREF(b->exe_fast);
    Py_XDECREF(b->env_fast);
    PyMem_Free(b->argv);
    PyMem_Free(b->executables);
    PyMem_Free(b->envp);
    PyMem_Free(b->pass_fds);
    PyMem_Free(b->rlimits);
}

/* ---- resource limits: a tuple of (resource, soft, hard) ints, -1 meaning
   unlimited (resource.RLIM_INFINITY), checked by aioproc/_limits.py ---- */
static int
limit_value(PyObject *o, uint64_t *out)
{
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < -1) {
        PyErr_SetString(PyExc_ValueError, "rlimits: a limit must be >= 0 (or -1: unlimited)");
        return -1;
    }
    *out = v == -1 ? (uint64_t)RLIM_INFINITY : (uint64_t)v;
    return 0;
}

static int
parse_rlimits(PyObject *seq, struct buffers *b, struct job *job)
{
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "rlimits must be a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    b->rlimits = PyMem_New(struct child_rlimit, n > 0 ? n : 1);
    if (b->rlimits == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "rlimits must hold (resource, soft, hard) tuples");
            return -1;
        }
        int res = as_int(PyTuple_GET_ITEM(item, 0));
        if (res == -1 && PyErr_Occurred()) {
            return -1;
        }
        b->rlimits[i].resource = res;
        if (limit_value(PyTuple_GET_ITEM(item, 1), &b->rlimits[i].soft) != 0 ||
            limit_value(PyTuple_GET_ITEM(item, 2), &b->rlimits[i].hard) != 0) {
            return -1;
        }
    }
    job->rlimits = b->rlimits;
    job->n_rlimits = n;
    return 0;
}
/* ---- end of resource limits ---- */

/* A NULL-terminated char *[] pointing into the bytes of `seq`. A tuple copy of
   `seq` (kept in *fast) holds the bytes objects: the call runs without the
   GIL, and another thread could change a list meanwhile. */
static char **
to_cstrings(PyObject *seq, PyObject **fast, Py_ssize_t *count, const char *what)
{
    *fast = PySequence_Tuple(seq);
    if (*fast == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(*fast);
    char **out = PyMem_New(char *, n + 1);
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(*fast, i);
        if (!PyBytes_Check(item)) {
            PyMem_Free(out);
            PyErr_Format(PyExc_TypeError, "%s must hold bytes", what);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    out[n] = NULL;
    if (count != NULL) {
        *count = n;
    }
    return out;
}

/* A redirect as subprocess spells it, and None (inherit) as R_INHERIT. */
#define R_INHERIT (-100)
#define R_PIPE (-1)
#define R_STDOUT (-2)
#define R_DEVNULL (-3)

static int
redirect_value(PyObject *o, int *out)
{
    if (o == Py_None) {
        *out = R_INHERIT;
        return 0;
    }
    int v = as_int(o);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = v;
    return 0;
}

static void
close_if(int fd)
{
    if (fd >= 0) {
        (void)close(fd);
    }
}

/* One child stream: the descriptor the child gets (-1: inherit) and our end
   (-1: none). Pipes and /dev/null are made here; `theirs` collects what the
   parent closes after the clone. */
static int
make_stream(int redirect, int child_reads, int *devnull, int *child_fd, int *our_end,
            int *theirs, int *n_theirs)
{
    *our_end = -1;
    if (redirect == R_INHERIT) {
        *child_fd = -1;
        return 0;
    }
    if (redirect == R_DEVNULL) {
        if (*devnull < 0) {
            *devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
            if (*devnull < 0) {
                return -1;
            }
            theirs[(*n_theirs)++] = *devnull;
        }
        *child_fd = *devnull;
        return 0;
    }
    if (redirect == R_PIPE) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) != 0) {
            return -1;
        }
        if (child_reads) {
            *child_fd = p[0];
            *our_end = p[1];
        } else {
            *child_fd = p[1];
            *our_end = p[0];
        }
        theirs[(*n_theirs)++] = *child_fd;
        return 0;
    }
    *child_fd = redirect; /* a descriptor of the caller's */
    return 0;
}

/* Where a live child's pidfd is kept: at or above this number, when the
   descriptor limit allows (the same floor as _waiting/_sys.py's
   PIDFD_FLOOR). The child's private table (close_range with
   CLOSE_RANGE_UNSHARE above) is a copy of every descriptor up to the highest
   one it keeps, and the pipes a spawn makes take the lowest free numbers. Left
   where the kernel put them, 10,000 live children's pidfds fill 3 to 10,002,
   the next spawn's pipes land above them, and its child copies (and then
   closes) all 10,000: 1.0-2.7 ms of CPU per spawn here. Moved up, they leave the
   low numbers to the pipes, and the copy stays a few descriptors long however
   many children live. 1024 also leaves the numbers select() can take to the
   application. */
#define PIDFD_FLOOR 1024

/* `fd`, moved to the lowest free number at or above PIDFD_FLOOR (close-on-exec,
   as before); `fd` itself where that is not possible (a descriptor limit at or
   below the floor, none free above it, no memory). */
static int
out_of_the_way(int fd)
{
    if (fd >= PIDFD_FLOOR) {
        return fd;
    }
    int high = fcntl(fd, F_DUPFD_CLOEXEC, PIDFD_FLOOR);
    if (high < 0) {
        return fd;
    }
    (void)close(fd);
    return high;
}

#define CHILD_STACK_SIZE (64 * 1024)

/* The child's stack, one per thread, kept from one spawn to the next: an
   mmap and munmap per spawn (with the TLB shootdown the munmap sends to the
   other CPUs, and the child's page faults on fresh pages) cost the parent
   ~25 us of its ~85 us per spawn here. Reusing it is safe: the child stops
   using it at its exec or exit, which is when clone() returns in the parent,
   and only this thread's spawns use it. A pthread key unmaps it when the
   thread exits (spawn workers retire). */
static __thread void *thread_stack;
static pthread_key_t stack_key;
static pthread_once_t stack_key_once = PTHREAD_ONCE_INIT;
static int stack_key_made;

static long stacks_kept; /* for tests: threads' stacks currently mapped */

static void
unmap_stack(void *stack)
{
    (void)munmap(stack, CHILD_STACK_SIZE);
    __atomic_fetch_sub(&stacks_kept, 1, __ATOMIC_RELAXED);
}

static void
make_stack_key(void)
{
    stack_key_made = pthread_key_create(&stack_key, unmap_stack) == 0;
}

/* This thread's child stack, or MAP_FAILED (errno set). *owned: the caller
   must unmap it after the spawn (no thread key to do it later). */
static void *
get_stack(int *owned)
{
    *owned = 0;
    if (thread_stack != NULL) {
        return thread_stack;
    }
    void *stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (stack == MAP_FAILED) {
        return MAP_FAILED;
    }
    (void)pthread_once(&stack_key_once, make_stack_key);
    if (stack_key_made && pthread_setspecific(stack_key, stack) == 0) {
        thread_stack = stack;
        __atomic_fetch_add(&stacks_kept, 1, __ATOMIC_RELAXED);
    } else {
        *owned = 1;
    }
    return stack;
}

PyDoc_STRVAR(spawn_doc,
"spawn(args, executables, env, cwd, stdin, stdout, stderr, pass_fds,\n"
"      start_new_session, process_group, umask, pdeathsig[, rlimits[, cgroup_procs]], /)\n"
"    -> (pid, pidfd, stdin_end, stdout_end, stderr_end) | (stage, errno)\n"
"\n"
"Make the child's pipes, clone it with CLONE_VM | CLONE_VFORK | CLONE_FILES |\n"
"CLONE_PIDFD and exec it, with the GIL released. args, executables and env hold bytes\n"
"(env None: inherit); stdin/stdout/stderr are None (inherit), PIPE (-1),\n"
"STDOUT (-2, stderr only), DEVNULL (-3) or a descriptor. pass_fds None means\n"
"close_fds=False (the child keeps every inheritable descriptor). Our pipe ends are\n"
"non-blocking and close-on-exec. When the child failed before its exec ran,\n"
"it has been reaped and everything made here closed, and the result is\n"
"(stage, errno) with stage 'chdir', 'exec', 'close_range', 'setrlimit', 'cgroup' or\n"
"'noexec' (the other steps before the exec). rlimits: a tuple of\n"
"(resource, soft, hard), -1 for unlimited, set in the child before exec.\n"
"cgroup_procs: an open cgroup.procs (or -1) the child writes itself into first.\n"
"Failures in the\n"
"parent (pipe2, clone) raise OSError, with nothing left behind.");

static PyObject *
aioproc_spawn(PyObject *module, PyObject *const *a, Py_ssize_t nargs)
{
    (void)module;
    if (nargs < 12 || nargs > 14) {
        PyErr_Format(PyExc_TypeError, "spawn() takes 12 to 14 arguments (%zd given)", nargs);
        return NULL;
    }
    struct buffers b;
    memset(&b, 0, sizeof b);
    struct job job;
    memset(&job, 0, sizeof job);
    int redirect[3];
    PyObject *result = NULL;

    b.argv = to_cstrings(a[0], &b.args_fast, NULL, "args");
    if (b.argv == NULL) {
        goto done;
    }
    if (b.argv[0] == NULL) {
        PyErr_SetString(PyExc_ValueError, "args must not be empty");
        goto done;
    }
    b.executables = to_cstrings(a[1], &b.exe_fast, &job.n_executables, "executables");
    if (b.executables == NULL) {
        goto done;
    }
    if (a[2] != Py_None) {
        b.envp = to_cstrings(a[2], &b.env_fast, NULL, "env");
        if (b.envp == NULL) {
            goto done;
        }
    }
    if (a[3] != Py_None) {
        if (!PyBytes_Check(a[3])) {
            PyErr_SetString(PyExc_TypeError, "cwd must be bytes or None");
            goto done;
        }
        job.cwd = PyBytes_AS_STRING(a[3]);
    }
    for (int i = 0; i < 3; i++) {
        if (redirect_value(a[4 + i], &redirect[i]) != 0) {
            goto done;
        }
        int r = redirect[i];
        if (r < 0 && r != R_INHERIT && r != R_PIPE && r != R_DEVNULL &&
            !(r == R_STDOUT && i == 2)) {
            PyErr_Format(PyExc_ValueError, "invalid redirect %d for descriptor %d", r, i);
            goto done;
        }
    }
    job.close_fds = a[7] != Py_None;
    if (job.close_fds) {
        PyObject *fds = a[7];
        if (!PyTuple_Check(fds)) {
            PyErr_SetString(PyExc_TypeError, "pass_fds must be a tuple or None");
            goto done;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(fds);
        b.pass_fds = PyMem_New(int, n > 0 ? n : 1);
        if (b.pass_fds == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int fd = as_int(PyTuple_GET_ITEM(fds, i));
            if (fd == -1 && PyErr_Occurred()) {
                goto done;
            }
            if (fd < 0 || (i > 0 && fd <= b.pass_fds[i - 1])) {
                PyErr_SetString(PyExc_ValueError, "pass_fds must be sorted, distinct and >= 0");
                goto done;
            }
            b.pass_fds[i] = fd;
        }
        job.n_pass_fds = n;
    }
    job.start_new_session = PyObject_IsTrue(a[8]);
    job.process_group = as_int(a[9]);
    job.umask = as_int(a[10]);
    job.pdeathsig = as_int(a[11]);
    if (job.start_new_session < 0 || PyErr_Occurred()) {
        goto done;
    }
    if (nargs > 12 && parse_rlimits(a[12], &b, &job) != 0) { /* resource limits */
        goto done;
    }
    job.cgroup_procs = -1; /* cgroup placement */
    if (nargs > 13) {
        job.cgroup_procs = as_int(a[13]);
        if (job.cgroup_procs == -1 && PyErr_Occurred()) {
            goto done;
        }
    }
    job.argv = b.argv;
    job.executables = b.executables;
    job.envp = b.envp;
    job.pass_fds = b.pass_fds;

    int theirs[4], n_theirs = 0, devnull = -1;
    int ours[3] = {-1, -1, -1};
    int pidfd = -1, failed_errno = 0;
    pid_t pid = -1;
    const char *failed_call = NULL;

    Py_BEGIN_ALLOW_THREADS
    int child_fd[3];
    if (make_stream(redirect[0], 1, &devnull, &child_fd[0], &ours[0], theirs, &n_theirs) != 0 ||
        make_stream(redirect[1], 0, &devnull, &child_fd[1], &ours[1], theirs, &n_theirs) != 0) {
        failed_errno = errno;
        failed_call = "pipe";
    } else if (redirect[2] == R_STDOUT) {
        child_fd[2] = child_fd[1] != -1 ? child_fd[1] : 1;
    } else if (make_stream(redirect[2], 0, &devnull, &child_fd[2], &ours[2], theirs,
                           &n_theirs) != 0) {
        failed_errno = errno;
        failed_call = "pipe";
    }
    void *stack = MAP_FAILED;
    int stack_owned = 0;
    if (failed_call == NULL) {
        stack = get_stack(&stack_owned);
        if (stack == MAP_FAILED) {
            failed_errno = errno;
            failed_call = "mmap";
        }
    }
    if (failed_call == NULL) {
        job.p2cread = child_fd[0];
        job.c2pwrite = child_fd[1];
        job.errwrite = child_fd[2];
        job.parent = getpid();
        sigset_t all, old;
        sigfillset(&all);
        /* Nothing may interrupt the child before its handlers are reset, nor
           this thread while the child borrows its memory. */
        pthread_sigmask(SIG_SETMASK, &all, &old);
        job.child_mask = thread_child_mask_set ? thread_child_mask : old;
        pid = clone(child_main, (char *)stack + CHILD_STACK_SIZE,
                    CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD | SIGCHLD, &job, &pidfd);
        if (pid < 0) {
            failed_errno = errno;
            failed_call = "clone";
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (stack_owned) {
            (void)munmap(stack, CHILD_STACK_SIZE);
        }
    }
    for (int i = 0; i < n_theirs; i++) {
        close(theirs[i]);
    }
    if (failed_call == NULL && job.fail_stage != STAGE_NONE) {
        /* The child reported its failure and exited: reap it through the
           pidfd (no PID is named, so nothing else can be hit). */
        siginfo_t info;
        int rc;
        while ((rc = waitid((idtype_t)P_PIDFD, (id_t)pidfd, &info, WEXITED)) != 0 &&
               errno == EINTR) {
        }
        if (rc != 0 && errno == EINVAL) {
            /* Linux 5.2 and 5.3 have CLONE_PIDFD but not P_PIDFD. The child is
               ours and unreaped, so its PID still names it. */
            while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
            }
        }
        close(pidfd);
    }
    if (failed_call != NULL || job.fail_stage != STAGE_NONE) {
        for (int i = 0; i < 3; i++) {
            close_if(ours[i]);
        }
    } else {
        for (int i = 0; i < 3; i++) {
            if (ours[i] >= 0) {
                (void)fcntl(ours[i], F_SETFL, O_NONBLOCK);
            }
        }
        pidfd = out_of_the_way(pidfd);
    }
    Py_END_ALLOW_THREADS

    if (failed_call != NULL) {
        errno = failed_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    if (job.fail_stage != STAGE_NONE) {
        const char *stage = job.fail_stage == STAGE_CHDIR         ? "chdir"
                            : job.fail_stage == STAGE_EXEC        ? "exec"
                            : job.fail_stage == STAGE_CLOSE_RANGE ? "close_range"
                            : job.fail_stage == STAGE_SETRLIMIT   ? "setrlimit"
                            : job.fail_stage == STAGE_CGROUP      ? "cgroup"
                                                                  : "noexec";
        result = Py_BuildValue("(si)", stage, job.fail_errno);
        goto done;
    }
    {
        PyObject *ends[3];
        for (int i = 0; i < 3; i++) {
            if (ours[i] >= 0) {
                ends[i] = PyLong_FromLong(ours[i]);
            } else {
                ends[i] = Py_NewRef(Py_None);
            }
        }
        result = Py_BuildValue("(iiNNN)", (int)pid, pidfd, ends[0], ends[1], ends[2]);
    }

done:
    buffers_free(&b);
    return result;
}

PyDoc_STRVAR(set_child_mask_doc,
"set_child_mask(signals, /)\n"
"\n"
"The signal mask that children spawned from this thread start with (by\n"
"default, the thread's mask at the time of the spawn). For spawn workers,\n"
"which keep every signal blocked.");

static PyObject *
aioproc_set_child_mask(PyObject *module, PyObject *signals)
{
    (void)module;
    PyObject *it = PyObject_GetIter(signals);
    if (it == NULL) {
        return NULL;
    }
    sigset_t mask;
    sigemptyset(&mask);
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int sig = as_int(item);
        Py_DECREF(item);
        if (sig == -1 && PyErr_Occurred()) {
            Py_DECREF(it);
            return NULL;
        }
        if (sigaddset(&mask, sig) != 0) {
            Py_DECREF(it);
            PyErr_Format(PyExc_ValueError, "invalid signal number %d", sig);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    thread_child_mask = mask;
    thread_child_mask_set = 1;
    Py_RETURN_NONE;
}

static PyObject *
aioproc_stacks_kept(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(__atomic_load_n(&stacks_kept, __ATOMIC_RELAXED));
}

static PyMethodDef methods[] = {
    {"spawn", (PyCFunction)(void (*)(void))aioproc_spawn, METH_FASTCALL, spawn_doc},
    {"stacks_kept", aioproc_stacks_kept, METH_NOARGS,
     "stacks_kept() -> int\n\nHow many threads keep a child stack mapped (for tests)."},
    {"set_child_mask", aioproc_set_child_mask, METH_O, set_child_mask_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "aioproc._clone_exec",
    "A spawn's fork/exec step in one GIL-free call (see aioproc/_spawn/_direct.py).",
    0,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__clone_exec(void)
{
    return PyModuleDef_Init(&module_def);
}
