"""Build script: compiles grid._codec, grid._mux and grid._struct unless told not to.

Set GRID_PURE=1 at build time (or build on a non-CPython interpreter) to skip
the extensions; the package then runs on its pure-Python twins.  A build
failure is an error, never a silent fallback: without a working C compiler
(and Python's headers) the build stops first with one message that says so
and names the ways out (a wheel, a compiler, or GRID_PURE=1).  GRID_CYTHON_ANNOTATE=1 writes
Cython's HTML annotation next to each .pyx; GRID_DEBUG=1 adds line tracing.

The compiled codec takes XXH3 from the system's xxHash header when there is
one (GRID_XXHASH_INCLUDE=DIR points at it, =none builds without it), else
from the xxhash package, and says so in one line; tools/buildcfg.py has the
details.  grid/_consts.pxi is generated from grid/_consts.py first
(tools/gen_consts.py).
"""

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tools"))

import buildcfg  # noqa: E402
import gen_consts  # noqa: E402

gen_consts.generate()  # also for an sdist made without building: it ships the .pxi


def _extensions() -> list:
    if buildcfg.flag("GRID_PURE") or platform.python_implementation() != "CPython":
        return []
    return buildcfg.extensions()


class BuildExt(build_ext):
    """build_ext that first checks the C compiler can build against Python's
    headers, so a machine without one gets a clear message rather than the
    first failing compiler command."""

    def build_extensions(self) -> None:
        if self.extensions:
            buildcfg.check_compiler(self.compiler, self.build_temp)
        super().build_extensions()


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
