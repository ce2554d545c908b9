"""grid/_consts.pxi, the compiled modules' view of grid/_consts.py, is
generated (tools/gen_consts.py) and says exactly what _consts.py says."""

from __future__ import annotations

import enum
import re
import subprocess
import sys
from pathlib import Path

import pytest

from grid import _consts

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import gen_consts  # noqa: E402

_ENUMERATOR = re.compile(r"^    ([A-Z][A-Z0-9_]*) = (-?\d+)$")
_DEFINE = re.compile(r"^    #define GRID_CONST_([A-Z][A-Z0-9_]*) (\d+)ULL$")
_EXTERN = re.compile(r'^    const uint64_t ([A-Z][A-Z0-9_]*) "GRID_CONST_([A-Z][A-Z0-9_]*)"$')


def _declared(text: str) -> dict[str, int]:
    """The Cython names and values a .pxi text declares."""
    values: dict[str, int] = {}
    defines: dict[str, int] = {}
    for line in text.splitlines():
        if m := _ENUMERATOR.match(line):
            assert m[1] not in values, f"{m[1]} declared twice"
            values[m[1]] = int(m[2])
        elif m := _DEFINE.match(line):
            defines[m[1]] = int(m[2])
        elif m := _EXTERN.match(line):
            assert m[1] == m[2] and m[1] not in values
            values[m[1]] = defines[m[2]]
    return values


def _expected() -> dict[str, int]:
    """Every integer constant of grid._consts under its Cython name."""
    out: dict[str, int] = {}
    for name, value in vars(_consts).items():
        if isinstance(value, type) and issubclass(value, enum.IntEnum) and value.__module__ == _consts.__name__:
            out.update({f"{name.upper()}_{m.name}": int(m) for m in value})
        elif name.isupper() and isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
    return out


def test_generated_text_declares_every_integer_constant():
    declared = _declared(gen_consts.render(gen_consts.load()))
    assert declared == _expected()
    # Spot checks of the three kinds: a flag, an op code, a value beyond C's int.
    assert declared["FLAG_SUBROUTE"] == 0x20
    assert declared["OP_MERGED"] == 17
    assert declared["MAX_UINT64"] == 2**64 - 1


def test_file_on_disk_is_current():
    if not gen_consts.TARGET.exists():
        pytest.skip("grid/_consts.pxi is not generated (no build in this checkout)")
    assert gen_consts.TARGET.read_text() == gen_consts.render(gen_consts.load())
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_consts.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_generator_rewrites_only_on_change(tmp_path):
    src = tmp_path / "consts.py"
    src.write_text("import enum\nA = 1\nWIDE = 1 << 40\nclass Kind(enum.IntEnum):\n    X = 3\n"
                   "NAME = 'x'\nRATE = 1.5\n_PRIVATE = 9\n")
    target = tmp_path / "consts.pxi"
    assert gen_consts.generate(target, src) is True
    assert _declared(target.read_text()) == {"A": 1, "WIDE": 1 << 40, "KIND_X": 3}
    assert gen_consts.generate(target, src) is False
    src.write_text(src.read_text().replace("A = 1", "A = 2"))
    assert gen_consts.generate(target, src) is True
    assert _declared(target.read_text())["A"] == 2


def test_out_of_range_constant_is_refused(tmp_path):
    src = tmp_path / "consts.py"
    src.write_text("NEG = -(1 << 40)\n")
    with pytest.raises(ValueError, match="NEG"):
        gen_consts.render(gen_consts.load(src))
