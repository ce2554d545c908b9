"""Build configuration of the compiled modules, shared by setup.py and the tests.

The one decision made here that the code can observe is where the compiled
codec's message CRC comes from (grid._codec.CRC_BACKEND):

* ``xxh3-inline``: the system's xxHash header (Debian/Ubuntu ``libxxhash-dev``,
  Fedora ``xxhash-devel``, Homebrew ``xxhash``) compiled in with
  ``XXH_INLINE_ALL``; the built module needs no libxxhash at run time.
* ``xxhash-package``: no header was found; the codec calls the ``xxhash``
  Python package, a dependency of grid in any case.

The header is looked for in ``GRID_XXHASH_INCLUDE`` (a directory, or ``none``
to build without it), then in pkg-config's ``--cflags libxxhash``, then in
the usual include directories.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

HEADER = "xxhash.h"
USUAL_DIRS = ("/usr/include", "/usr/local/include", "/opt/homebrew/include")
ENV_INCLUDE = "GRID_XXHASH_INCLUDE"
INLINE, PACKAGE = "xxh3-inline", "xxhash-package"


def flag(name: str) -> bool:
    """A boolean environment switch: ``1``/``true``/``yes`` (any case) is on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _pkg_config_dirs() -> list[str]:
    exe = shutil.which("pkg-config")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--cflags", "libxxhash"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [tok[2:] for tok in out.stdout.split() if tok.startswith("-I") and len(tok) > 2]


def xxhash_include() -> Optional[str]:
    """The directory holding xxhash.h, "" when the compiler finds it without
    a -I (a default include directory), or None when there is none to use."""
    override = os.environ.get(ENV_INCLUDE, "").strip()
    if override:
        if override.lower() == "none":
            return None
        return override if (Path(override) / HEADER).is_file() else None
    for d in _pkg_config_dirs():
        if (Path(d) / HEADER).is_file():
            return d
    for d in USUAL_DIRS:
        if (Path(d) / HEADER).is_file():
            return "" if d == "/usr/include" else d
    return None


def crc_backend() -> str:
    """The CRC path a build takes on this machine: INLINE or PACKAGE."""
    return PACKAGE if xxhash_include() is None else INLINE


def extensions(names: tuple[str, ...] = ("grid._codec", "grid._mux", "grid._struct"),
               quiet: bool = False) -> list[Any]:
    """The cythonized Extensions for ``names`` (paths relative to the checkout
    root, the current directory of a build)."""
    from Cython.Build import cythonize
    from Cython.Compiler import Options
    from setuptools import Extension

    import gen_consts

    gen_consts.generate()
    Options.warning_errors = True
    debug = flag("GRID_DEBUG")
    asan = flag("GRID_ASAN")
    macros = [("CYTHON_TRACE", "1"), ("GRID_DEBUG", "1")] if debug else []
    include_dirs: list[str] = []
    found = xxhash_include()
    if found is None:
        print(f"grid build: no xxHash header (install libxxhash-dev, xxhash-devel or Homebrew xxhash, "
              f"or set {ENV_INCLUDE}); the compiled codec computes CRCs through the xxhash package",
              file=sys.stderr)
    else:
        macros.append(("GRID_HAVE_XXHASH_H", "1"))
        if found:
            include_dirs.append(found)
    cflags = ["-O2", "-Wall", "-Werror=incompatible-pointer-types"]
    if asan:
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1"]
    exts = [
        Extension(name, [f"{name.replace('.', '/')}.pyx"], define_macros=macros,
                  include_dirs=include_dirs, extra_compile_args=cflags,
                  extra_link_args=["-fsanitize=address"] if asan else [])
        for name in names
    ]
    return cythonize(
        exts,
        compiler_directives={"language_level": 3, "embedsignature": True, "linetrace": debug},
        annotate=flag("GRID_CYTHON_ANNOTATE"),
        quiet=quiet,
    )


NO_COMPILER = (
    "gridmux: no working C compiler for grid's compiled core ({detail}). "
    "To install without one: GRID_PURE=1 pip install gridmux (pure Python, the same API, slower). "
    "Or install a C compiler and Python's headers (Debian/Ubuntu: apt-get install gcc "
    "python3-dev; Fedora: dnf install gcc python3-devel; macOS: xcode-select --install), "
    "or a prebuilt gridmux wheel."
)


def check_compiler(compiler: Any, build_temp: str) -> None:
    """Compile a one-line C file that includes Python.h with ``compiler`` (a
    setuptools/distutils CCompiler set up by build_ext); raise
    setuptools.errors.PlatformError with :data:`NO_COMPILER` if that fails."""
    from setuptools.errors import CompileError, ExecError, PlatformError

    tmp = Path(build_temp) / "grid-compiler-check"
    tmp.mkdir(parents=True, exist_ok=True)
    src = tmp / "probe.c"
    src.write_text("#include <Python.h>\nint grid_probe(void) { return 0; }\n")
    cmd = getattr(compiler, "compiler_so", None) or [getattr(compiler, "compiler_type", "cc")]
    try:
        compiler.compile([str(src)], output_dir=str(tmp))
    except (CompileError, ExecError, OSError):
        detail = f"{cmd[0]} failed on a one-line C file that includes Python.h"
        raise PlatformError(NO_COMPILER.format(detail=detail)) from None


if __name__ == "__main__":
    # `python tools/buildcfg.py`: the CRC path a build would take (the Makefile's check).
    print(crc_backend())
