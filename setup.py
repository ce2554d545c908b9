"""Build script: compiles grid._codec, grid._mux and grid._struct unless told not to.

Set GRID_PURE=1 at build time (or build on a non-CPython interpreter) to skip
the extensions; the package then runs on its pure-Python twins.  A build
failure is an error, never a silent fallback.  GRID_CYTHON_ANNOTATE=1 writes
Cython's HTML annotation next to each .pyx; GRID_DEBUG=1 adds line tracing.
"""

import os
import platform

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _extensions() -> list:
    if _flag("GRID_PURE") or platform.python_implementation() != "CPython":
        return []
    from Cython.Build import cythonize
    from Cython.Compiler import Options

    Options.warning_errors = True
    debug = _flag("GRID_DEBUG")
    macros = [("CYTHON_TRACE", "1"), ("GRID_DEBUG", "1")] if debug else []
    cflags = ["-O2", "-Wall", "-Werror=incompatible-pointer-types"]
    if _flag("GRID_ASAN"):
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1"]
    exts = [
        Extension(name, [f"{name.replace('.', '/')}.pyx"], define_macros=macros,
                  extra_compile_args=cflags,
                  extra_link_args=["-fsanitize=address"] if _flag("GRID_ASAN") else [])
        for name in ("grid._codec", "grid._mux", "grid._struct")
    ]
    return cythonize(
        exts,
        compiler_directives={
            "language_level": 3,
            "embedsignature": True,
            "linetrace": debug,
        },
        annotate=_flag("GRID_CYTHON_ANNOTATE"),
    )


setup(ext_modules=_extensions())
