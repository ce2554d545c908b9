"""docs/API.md is generated from the public names' docstrings: every public
name has an entry and a docstring, and the committed reference matches the
code (in both modes)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grid

ROOT = Path(__file__).resolve().parents[2]
API_MD = ROOT / "docs" / "API.md"


def _gen_api() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_api", ROOT / "docs" / "gen_api.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _entries(text: str) -> dict[str, list[str]]:
    """Each ``## `module``` section's entry names (``### <kind> `name...```)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in text.splitlines():
        if m := re.match(r"^## `([\w.]+)`$", line):
            section = m.group(1)
            out[section] = []
        elif (m := re.match(r"^### (class|def|constant|type) `(\w+)", line)) and section:
            out[section].append(m.group(2))
    return out


def test_api_reference_is_current_and_complete() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_api.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_public_name_has_an_entry() -> None:
    entries = _entries(API_MD.read_text())
    modules = _gen_api().MODULES
    assert modules[0] == "grid" and list(entries) == modules
    # grid.__all__ in full, uppercase names (MSS, JSON, ROUTE_PATH) included.
    assert entries["grid"] == list(grid.__all__)
    for modname in modules:
        assert entries[modname] == list(importlib.import_module(modname).__all__), modname


def test_internal_constructors_are_hidden() -> None:
    text = API_MD.read_text()
    for cls in ("Connection", "Stream", "StreamOut", "Subroute", "TypedStream", "TypedStreamOut"):
        assert f"### class `{cls}`\n" in text, cls
    assert "### class `Manager(local: 'str'" in text  # a class users make keeps its signature
    assert "_ServerStream" not in text and "(conn: 'Connection'" not in text


def test_check_fails_on_a_missing_name_or_a_stale_file(tmp_path: Path) -> None:
    gen = _gen_api()
    text, problems = gen.generate()
    assert problems == []
    assert gen.undocumented(text) == []
    for name in ("MSS", "JSON", "ROUTE_PATH"):
        dropped = re.sub(rf"^### \w+ `{name}\b.*$", "", text, count=1, flags=re.M)
        assert gen.undocumented(dropped) == [f"grid.{name}"]
    # --check on a stale copy of the tree's docs/API.md fails and says why.
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "gen_api.py").write_text((ROOT / "docs" / "gen_api.py").read_text())
    (docs / "API.md").write_text(text.replace("### class `MSS`", "### class `Mss`"))
    proc = subprocess.run([sys.executable, str(docs / "gen_api.py"), "--check"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1
    assert "missing from docs/API.md: grid.MSS" in proc.stdout
    assert "docs/API.md is stale" in proc.stdout


def test_entries_carry_whole_docstrings_fields_and_async_with() -> None:
    """Every description is whole (not cut at its first line), reST fields
    become lists, roles become code, and ``async with`` is documented."""
    text = API_MD.read_text()
    # The last sentence of register_single's docstring, well past its first line.
    assert "``\"<Type>: <text>\"``.  May be called before or after `start`." in text
    assert "- raises `KeyError`: ``host`` is not a peer of this node" in text
    assert "- `max_queued_requests`: requests that may wait" in text
    assert "#### `async with Manager` (`__aenter__`/`__aexit__`)" in text
    assert "starts the manager (`start`" in text
    assert "#### `async with TestGrid`" in text
    assert ":param" not in text and ":raises" not in text and ":class:" not in text
    for name in ("MSS", "JSON", "ACCELERATED", "ROUTE_PATH", "LOCK_ROUTE_PATH"):
        assert re.search(rf"^### (class|constant) `{name}\b", text, re.M), name
    # The whole module docstring, literal blocks as indented code.
    assert "\n    spans = grid.otel.instrument(manager)" in text
    gen = _gen_api()
    assert gen._markdown(":param x: first\n    second\n:raises ValueError: bad\n\nAfter.") == \
        "- `x`: first second\n- raises `ValueError`: bad\n\nAfter."
