"""The optional C accelerators; everything else about the package is in pyproject.toml.

Both are built where a C compiler and Python's headers are at hand, on Linux
only. When a build fails, the install goes on without it (``optional=True``):

- ``aioproc._waiting._waitid``: without it, aioproc calls the same system call
  through ctypes (see ``aioproc/_waiting/_sys.py``);
- ``aioproc._clone_exec``: without it, spawns use CPython's
  ``_posixsubprocess.fork_exec`` (see ``aioproc/_spawn/_direct.py``).
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform.startswith("linux"):
    ext_modules.append(
        Extension(
            "aioproc._waiting._waitid",
            ["aioproc/_waiting/_waitid.c"],
            optional=True,
        )
    )
    ext_modules.append(
        Extension(
            "aioproc._clone_exec",
            ["aioproc/_clone_exec.c"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
