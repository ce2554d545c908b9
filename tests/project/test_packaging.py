"""Packaging hygiene (STYLE.md 11, "sdist missing sources"): build the sdist,
build the wheel *from that sdist*, and check what each carries; then import
the wheel's compiled core in a fresh interpreter.

Mode independent, so it runs only in the accelerated run of the suite.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import PURE

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import buildcfg  # noqa: E402
import wheels  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(PURE, reason="packaging does not depend on GRID_PURE; checked in the accelerated run"),
]

SDIST_REQUIRED = [
    "grid/_codec.pyx", "grid/_codec.pxd", "grid/_mux.pyx", "grid/_mux.pxd", "grid/_struct.pyx",
    "grid/py.typed", "grid/_codec_py.py", "grid/_mux_py.py", "setup.py", "pyproject.toml",
    "grid/includes/crc.h", "grid/_consts.pxi", "tools/gen_consts.py", "tools/buildcfg.py",
]
SOURCE_SUFFIXES = (".pyx", ".pxd", ".pxi", ".h")
WHEEL_FORBIDDEN = (".pyx", ".pxd", ".pxi", ".c", ".h", ".html")


def _run(cmd: list[str], cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GRID_PURE", "GRID_CYTHON_ANNOTATE", "GRID_DEBUG")}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"


_SKIP_DIRS = {".git", ".venv", "build", "dist", "__pycache__", ".hypothesis", ".pytest_cache", ".fuzz"}
_SKIP_SUFFIXES = (".so", ".pyd", ".c", ".html", ".pyc")


def _source_files() -> list[str]:
    """What git would ship (tracked and new, not ignored); outside a git
    checkout (tests run from an unpacked sdist), the tree minus build output."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True)
    if listing.returncode == 0:
        return [f for f in listing.stdout.decode().split("\0") if f and (ROOT / f).is_file()]
    files = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.endswith(".egg-info")]
        for name in filenames:
            if not name.endswith(_SKIP_SUFFIXES):
                files.append(str((Path(dirpath) / name).relative_to(ROOT)))
    return files


def _checkout_copy(dest: Path) -> list[str]:
    """Copy the sources so the build can neither see nor disturb the working
    tree's in-place .so/.c files."""
    files = _source_files()
    for f in files:
        target = dest / f
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / f).read_bytes())
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    files = _checkout_copy(src)
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp / "sdist"), str(src)], tmp)
    (sdist,) = (tmp / "sdist").glob("*.tar.gz")
    with tarfile.open(sdist) as tf:
        if hasattr(tarfile, "data_filter"):  # 3.10.12+ / 3.11.4+
            tf.extractall(tmp / "unpacked", filter="data")
        else:
            tf.extractall(tmp / "unpacked")
    (unpacked,) = (tmp / "unpacked").iterdir()
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "wheel"), str(unpacked)], tmp)
    (wheel,) = (tmp / "wheel").glob("*.whl")
    return {"tmp": tmp, "files": files, "sdist": sdist, "wheel": wheel, "unpacked": unpacked}


def test_sdist_has_sources(built):
    with tarfile.open(built["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    missing = [f for f in SDIST_REQUIRED if f not in names]
    assert not missing, f"sdist lacks {missing}"
    # Every Cython source and C header of the checkout ships (httptools #110).
    sources = [f for f in built["files"] if f.startswith("grid/") and f.endswith(SOURCE_SUFFIXES)]
    assert not [f for f in sources if f not in names]
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    # Third-party code is a dependency, never a copy: no xxHash header ships.
    assert not [n for n in names if Path(n).name.startswith(("xxhash", "xxh3", "LICENSE."))]


def test_wheel_from_sdist_has_compiled_core(built):
    wheel = built["wheel"]
    assert not wheel.name.endswith("-none-any.whl"), f"{wheel.name} is not a platform wheel"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    for mod in ("_codec", "_mux", "_struct"):
        assert [n for n in names if n.startswith(f"grid/{mod}.") and n.endswith((".so", ".pyd"))], \
            f"wheel lacks the compiled grid.{mod}"
    assert "grid/py.typed" in names
    assert not [n for n in names if "xxhash" in n.lower()]  # XXH3 is compiled in or imported
    for mod in ("_codec", "_mux", "_struct"):
        assert f"grid/{mod}.pyi" in names and f"grid/{mod}_py.py" in names  # the twin's signatures
    leaked = [n for n in names if n.endswith(WHEEL_FORBIDDEN)]
    assert not leaked, f"wheel ships build sources: {leaked}"


def test_wheel_imports_accelerated(built):
    site = built["tmp"] / "site"
    with zipfile.ZipFile(built["wheel"]) as zf:
        zf.extractall(site)
    env = {k: v for k, v in os.environ.items() if k != "GRID_PURE"}
    env.update(PYTHONPATH=str(site), GRID_REQUIRE_ACCEL="1")
    out = subprocess.run(
        [sys.executable, "-c",
         "import grid, grid._impl; print(grid.ACCELERATED, grid._impl.codec.__file__, grid._impl.codec.CRC_BACKEND)"],
        cwd=built["tmp"], env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    accelerated, path, crc = out.stdout.split()
    assert accelerated == "True"
    assert crc == buildcfg.crc_backend()  # the wheel took the CRC path this machine offers
    assert Path(path).is_relative_to(site)


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(meta).decode()


def test_version_comes_from_grid_version(built):
    tree = ast.parse((ROOT / "grid" / "__init__.py").read_text())
    (version,) = [ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                  and [getattr(t, "id", None) for t in n.targets] == ["__version__"]]
    assert re.search(rf"^Version: {re.escape(version)}$", _metadata(built["wheel"]), re.M)
    assert built["sdist"].name == f"{wheels.DIST}-{version}.tar.gz"
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_licence_and_supported_pythons_in_metadata(built):
    meta = _metadata(built["wheel"])
    with zipfile.ZipFile(built["wheel"]) as zf:
        assert [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    with tarfile.open(built["sdist"]) as tf:
        assert [n for n in tf.getnames() if n.endswith("/LICENSE")]
    assert "License-Expression: Apache-2.0" in meta
    listed = re.findall(r"^Classifier: Programming Language :: Python :: (3\.\d+)$", meta, re.M)
    assert listed == list(wheels.SUPPORTED)
    assert f"Requires-Python: >={wheels.SUPPORTED[0]}" in meta
    make = (ROOT / "Makefile").read_text()
    assert re.search(rf"^WHEEL_PYTHONS \?= {' '.join(wheels.SUPPORTED)}$", make, re.M)


def test_build_without_a_compiler_fails_with_one_message(built):
    src = built["tmp"] / "no-compiler"
    # Without the fixture's build/ (its compiled modules would go into the pure wheel).
    shutil.copytree(built["unpacked"], src, ignore=shutil.ignore_patterns("build", "*.so"))
    env = {k: v for k, v in os.environ.items() if k not in ("GRID_PURE", "GRID_DEBUG", "GRID_ASAN")}
    env.update(CC="/bin/false", CXX="/bin/false")
    cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(src / "out"), str(src)]
    out = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=600)
    lines = [x for x in (out.stdout + out.stderr).splitlines() if wheels.NO_COMPILER_MARK in x]
    assert out.returncode != 0 and len(lines) == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert "GRID_PURE=1" in lines[0] and "/bin/false" in lines[0]
    env["GRID_PURE"] = "1"
    out = subprocess.run(cmd, cwd=src, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (pure,) = (src / "out").glob("*.whl")
    assert pure.name == built["sdist"].name[:-7] + "-py3-none-any.whl"
    # The pure package imports and says, once, why it runs the pure twins.
    with zipfile.ZipFile(pure) as zf:
        zf.extractall(src / "site")
    env = {k: v for k, v in os.environ.items() if k not in ("GRID_PURE", "GRID_REQUIRE_ACCEL")}
    env["PYTHONPATH"] = str(src / "site")
    # -S and the site directories added by hand: no .pth file runs, so an
    # editable install of the checkout cannot lend its compiled modules.
    env["PYTHONPATH"] += os.pathsep + sysconfig.get_paths()["purelib"]
    out = subprocess.run([sys.executable, "-S", "-c",
                          "import logging; logging.basicConfig(); import grid; "
                          "print(grid.__file__, grid.ACCELERATED)"],
                         cwd=src / "site", env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == [str(src / "site" / "grid" / "__init__.py"),
                                                          "False"], out.stdout + out.stderr
    assert out.stderr.count("WARNING") == 1 and "not built: installed with GRID_PURE=1" in out.stderr
    assert "circular" not in out.stderr, out.stderr


def test_distribution_name_is_ours():
    """An unrelated project owns ``grid`` on the package index: the
    distribution is gridmux (the import name stays grid) everywhere."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"] == wheels.DIST
    assert wheels.DIST == "gridmux"
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "gridmux[prometheus]"' in readme
    assert not re.search(r"pip install [\"']?grid[\[\s\"']", readme)
    assert wheels.NO_COMPILER_MARK.startswith("gridmux:")


def test_wheel_problems_finds_leaks(built):
    good = built["wheel"]
    assert wheels.wheel_problems(good) == [f"no manylinux_2_* tag in {wheels.wheel_tag(good)}"]
    assert wheels.wheel_python(good) == f"{sys.version_info[0]}.{sys.version_info[1]}"
    bad = built["tmp"] / good.name.replace("linux_x86_64", "manylinux_2_17_x86_64")
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            if not item.filename.endswith(("LICENSE", "py.typed")):
                zout.writestr(item, zin.read(item))
        zout.writestr("grid/_codec.pyx", "")
        zout.writestr("tests/test_x.py", "")
    assert sorted(wheels.wheel_problems(bad)) == sorted([
        "build source grid/_codec.pyx", "test file tests/test_x.py", "missing grid/py.typed",
        "missing the licence file in .dist-info/licenses/"])
    assert wheels.sdist_problems(built["sdist"]) == []
