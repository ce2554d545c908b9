"""Where the compiled codec's message CRC comes from, and that every path
computes XXH3 exactly as the ``xxhash`` package does.

A build takes XXH3 from the system's xxHash header, compiled inline
(``CRC_BACKEND == "xxh3-inline"``), or, without the header, from the xxhash
package (``"xxhash-package"``); the pure twin always uses the package.  The
expected path is what tools/buildcfg.py finds on this machine, or
``GRID_EXPECT_CRC_BACKEND`` when a build was told otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xxhash

from grid import _codec_py
from grid._consts import FLAG_CRC, FLAG_SUBROUTE, LARGE_MESSAGE
from grid.errors import ProtocolError

from conftest import CODEC_IDS, CODEC_TWINS, PURE, codec_cy

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import buildcfg  # noqa: E402

# Lengths of the hashed part of a message (everything before its CRC): the
# shortest envelope (empty payload), XXH3's size classes (<= 16, <= 128,
# <= 240, long), both sides of each edge, and inputs of LARGE_MESSAGE and
# more, which the compiled codec hashes with the GIL released.
HASHED_LENGTHS = [9, 10, 11, 16, 17, 18, 128, 129, 130, 239, 240, 241, 242, 1024, 4096,
                  LARGE_MESSAGE - 1, LARGE_MESSAGE, LARGE_MESSAGE + 1, 3 * LARGE_MESSAGE + 7]

# Inputs of the public xxh3_64 / crc32 (the package in both twins).
PUBLIC_LENGTHS = [0, 1, 2, 3, 4, 8, 16, 17, 128, 129, 240, 241, LARGE_MESSAGE]


def _payload_for(hashed: int) -> bytes:
    """A payload whose message (ids 1, 2, 3, 4, 5) hashes exactly ``hashed``
    bytes: a fixarray byte, six one-byte ints, the bin header, the payload."""
    for header in (2, 3, 5):
        n = hashed - 7 - header
        if n >= 0 and header == (2 if n < 0x100 else 3 if n < 0x10000 else 5):
            return random.Random(hashed).randbytes(n)
    raise AssertionError(f"no payload hashes to {hashed} bytes")


def test_pure_twin_uses_the_package():
    assert _codec_py.CRC_BACKEND == "xxhash-package"


@pytest.mark.skipif(codec_cy is None, reason="the compiled codec is not built")
def test_compiled_backend_is_what_the_build_found():
    expected = os.environ.get("GRID_EXPECT_CRC_BACKEND") or buildcfg.crc_backend()
    assert codec_cy.CRC_BACKEND == expected, (
        f"grid._codec was built with {codec_cy.CRC_BACKEND}, this machine gives {expected}: rebuild "
        f"(setup.py build_ext --inplace)")


@pytest.mark.parametrize("codec", CODEC_TWINS, ids=CODEC_IDS)
@pytest.mark.parametrize("hashed", HASHED_LENGTHS)
def test_message_crc_is_xxh3_of_the_envelope(codec, hashed):
    payload = _payload_for(hashed)
    wire = codec.encode_message(1, 2, 3, 4, 5, FLAG_CRC, payload)
    assert len(wire) == hashed + 4
    assert int.from_bytes(wire[-4:], "little") == xxhash.xxh3_64_intdigest(wire[:-4]) & 0xFFFFFFFF
    assert wire == _codec_py.encode_message(1, 2, 3, 4, 5, FLAG_CRC, payload)
    assert (codec.decode_message(wire).payload or b"") == payload
    broken = bytearray(wire)
    broken[-1] ^= 0x40  # the CRC itself: every envelope field stays valid
    with pytest.raises(ProtocolError, match="crc mismatch"):
        codec.decode_message(bytes(broken))


@pytest.mark.parametrize("codec", CODEC_TWINS, ids=CODEC_IDS)
def test_message_crc_covers_the_subroute(codec):
    sub = _codec_py.subroute_id("disk/1", 7)
    wire = codec.encode_message(1, 2, 3, 4, 5, FLAG_CRC | FLAG_SUBROUTE, b"x" * 300, sub)
    assert wire[-36:-4] == sub
    assert int.from_bytes(wire[-4:], "little") == xxhash.xxh3_64_intdigest(wire[:-4]) & 0xFFFFFFFF
    assert codec.decode_message(wire).subroute == sub


@pytest.mark.parametrize("codec", CODEC_TWINS, ids=CODEC_IDS)
@pytest.mark.parametrize("n", PUBLIC_LENGTHS)
def test_public_hashes_agree_with_the_package(codec, n):
    data = random.Random(n).randbytes(n)
    assert codec.xxh3_64(data) == xxhash.xxh3_64_intdigest(data)
    assert codec.crc32(data) == xxhash.xxh3_64_intdigest(data) & 0xFFFFFFFF
    assert codec.crc32(memoryview(bytearray(data))) == codec.crc32(data)


_CHECK_FALLBACK = textwrap.dedent("""
    import sys, xxhash
    import grid._codec as c, grid._codec_py as p
    from grid.errors import ProtocolError
    assert c.__file__.startswith(sys.argv[1]), c.__file__
    assert c.CRC_BACKEND == "xxhash-package", c.CRC_BACKEND
    for hashed in [int(x) for x in sys.argv[2].split(",")]:
        n = hashed - 9
        n = n if n < 0x100 else n - 1 if n - 1 < 0x10000 else n - 3
        payload = (bytes(range(256)) * (hashed // 256 + 1))[:n]
        wire = c.encode_message(1, 2, 3, 4, 5, 1, payload)
        assert len(wire) == hashed + 4, (hashed, len(wire))
        assert wire == p.encode_message(1, 2, 3, 4, 5, 1, payload)
        assert int.from_bytes(wire[-4:], "little") == xxhash.xxh3_64_intdigest(wire[:-4]) & 0xFFFFFFFF
        assert (c.decode_message(wire).payload or b"") == payload
        try:
            c.decode_message(wire[:-1] + bytes([wire[-1] ^ 1]))
        except ProtocolError as exc:
            assert "crc mismatch" in str(exc)
        else:
            raise AssertionError("a wrong CRC decoded")
    print("ok")
""")


@pytest.mark.slow
@pytest.mark.skipif(PURE, reason="builds a compiled codec; run once, in the compiled run")
def test_build_without_header_uses_the_package(tmp_path):
    """GRID_XXHASH_INCLUDE=none builds the codec without the header: the
    build says so in one line and the module's CRCs still match the package's."""
    pytest.importorskip("Cython")
    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "grid", src / "grid",
                    ignore=shutil.ignore_patterns("*.so", "*.c", "*.html", "__pycache__", "_consts.pxi"))
    shutil.copytree(ROOT / "tools", src / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k not in ("GRID_PURE", "GRID_REQUIRE_ACCEL", "GRID_ASAN")}
    env["GRID_XXHASH_INCLUDE"] = "none"
    build = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, 'tools'); import buildcfg; from setuptools import setup; "
         "setup(ext_modules=buildcfg.extensions(('grid._codec',), quiet=True), "
         "script_args=['-q', 'build_ext', '--inplace'])"],
        cwd=src, env=env, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    said = [ln for ln in (build.stdout + build.stderr).splitlines() if ln.startswith("grid build:")]
    assert len(said) == 1 and "xxhash package" in said[0], said
    env["GRID_PURE"] = "1"  # grid._impl takes the twins; grid._codec is imported directly
    env["PYTHONPATH"] = str(src)
    lengths = ",".join(str(n) for n in (9, 10, 17, 128, 129, 240, 241, 242, 70000, LARGE_MESSAGE + 1))
    check = subprocess.run([sys.executable, "-c", _CHECK_FALLBACK, str(src / "grid"), lengths],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr[-4000:]
    assert check.stdout.split() == ["ok"]
