/* aioproc._waiting._waitid: waitid(2) with the rusage, for the reap of a child.
 *
 * An optional accelerator for aioproc/_waiting/_sys.py, which falls back to
 * calling the same system call through ctypes when this module is not built.
 * Python's os.waitid does not return the rusage that the raw system call fills
 * in, and aioproc must reap through the pidfd (P_PIDFD), never by PID, so
 * os.wait4 is no substitute.
 *
 * Why it exists: the reap runs on the loop thread between a child's exit and
 * the wake-up of its waiters, after the loop sat idle in epoll_wait while the
 * child ran. On those cold caches a ctypes call (argument conversion, libffi)
 * costs about 9 us more than the system call itself; this costs nothing
 * measurable beyond it.
 *
 * The GIL is kept: the call is only allowed with WNOHANG, so it never blocks,
 * and releasing the GIL around a few-microsecond system call costs more than
 * it saves, worse while spawn workers contend for it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

PyDoc_STRVAR(waitid_doc,
"waitid(idtype, id, options, /) -> (pid, code, status, rusage) | None\n"
"\n"
"The waitid system call. options must include WNOHANG. Returns None when\n"
"nothing has exited yet (also for EAGAIN from a non-blocking pidfd), else\n"
"the siginfo's si_pid, si_code and si_status and the kernel's struct rusage\n"
"as bytes (None with WNOWAIT, where the kernel fills none in). EINTR is\n"
"retried; other errors raise OSError (ECHILD: ChildProcessError).");

static PyObject *
aioproc_waitid(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "waitid() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    long idtype = PyLong_AsLong(args[0]);
    long id = PyLong_AsLong(args[1]);
    long options = PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (!(options & WNOHANG)) {
        PyErr_SetString(PyExc_ValueError,
                        "waitid() without WNOHANG would block holding the GIL");
        return NULL;
    }
    siginfo_t info;
    struct rusage usage;
    int want_usage = !(options & WNOWAIT);
    long rc;
    /* si_pid must read 0 when WNOHANG found nothing; Linux zeroes it then,
       but an explicit zero costs nothing and depends on no kernel version. */
    memset(&info, 0, sizeof info);
    do {
        rc = syscall(SYS_waitid, (int)idtype, (int)id, &info, (int)options,
                     want_usage ? &usage : NULL);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) {
        if (errno == EAGAIN) {
            /* A pidfd in non-blocking mode (uvloop sets O_NONBLOCK on every
               descriptor it watches) answers EAGAIN for "not exited yet". */
            Py_RETURN_NONE;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (info.si_pid == 0) {
        Py_RETURN_NONE;
    }
    if (!want_usage) {
        return Py_BuildValue("(iiiO)", (int)info.si_pid, info.si_code, info.si_status,
                             Py_None);
    }
    return Py_BuildValue("(iiiy#)", (int)info.si_pid, info.si_code, info.si_status,
                         (const char *)&usage, (Py_ssize_t)sizeof usage);
}

static PyMethodDef methods[] = {
    {"waitid", (PyCFunction)(void (*)(void))aioproc_waitid, METH_FASTCALL, waitid_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "aioproc._waiting._waitid",
    "waitid(2) with the rusage, for aioproc's reap (see _sys.py).",
    0,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__waitid(void)
{
    PyObject *m = PyModuleDef_Init(&module_def);
    return m;
}
