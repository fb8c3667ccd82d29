"""The optional C accelerator; everything else about the package is in pyproject.toml.

``aioproc._waiting._waitid`` is built where a C compiler and Python's headers
are at hand, on Linux only. When the build fails, the install goes on without
it (``optional=True``) and aioproc calls the same system call through ctypes
(see ``aioproc/_waiting/_sys.py``).
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

setup(ext_modules=ext_modules)
