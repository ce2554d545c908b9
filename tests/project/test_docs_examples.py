"""Every ```python block of README.md and docs/*.md runs as written.

Each block is saved to a file of its own and run with this interpreter in a
fresh directory, with a timeout; it must exit 0.  Loopback ports the block
names (``127.0.0.1:9001`` in a host string, ``("127.0.0.1", 9001)`` in a
tuple) are replaced by free ports, the same port by the same free port, so
the examples can show readable fixed ports.  An HTML comment on the line
before a block tells how to run it:

- ``<!-- doc-test: processes=N -->``: the block is one node of an N-process
  example; it is run N times at once, with ``1`` .. ``N`` as its argument,
  and every process must exit 0.
- ``<!-- doc-test: fragment -->``: a piece of a larger program (it names
  objects it does not define); it is only compiled.  Keep these rare.
- ``<!-- doc-test: sh -->`` before a ```sh block: the commands run (with
  ``sh -e``) in the directory of every later Python block of the same file,
  before that block (e.g. the TLS guide's certificates).

The README's two-process example must also pass ``mypy --strict``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from grid.testing import free_ports

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->$")
PORT = re.compile(r'(127\.0\.0\.1:|"127\.0\.0\.1",\s*)(\d{4,5})\b')
TIMEOUT = 90.0


@dataclass
class Block:
    """One fenced code block of a document."""

    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    marker: str  # what follows "doc-test:" on the line before, or ""
    source: str

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """The fenced code blocks of ``doc``, in order."""
    out: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start = i
        i += 1
        while i < len(lines) and lines[i] != "```":
            i += 1
        marker = ""
        if start > 0 and (mm := MARKER.match(lines[start - 1].strip())):
            marker = mm.group(1)
        out.append(Block(doc, start + 1, m.group(1), marker, "\n".join(lines[start + 1:i]) + "\n"))
        i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
PYTHON = [b for b in ALL if b.lang == "python"]


def with_free_ports(source: str) -> str:
    """``source`` with every loopback port replaced by a free one."""
    ports = sorted({m.group(2) for m in PORT.finditer(source)})
    mapping = dict(zip(ports, map(str, free_ports(len(ports))))) if ports else {}
    return PORT.sub(lambda m: m.group(1) + mapping[m.group(2)], source)


def _setup(block: Block, where: Path) -> None:
    """Run the ``doc-test: sh`` blocks that come before ``block`` in its file."""
    for b in ALL:
        if b.doc == block.doc and b.line < block.line and b.marker == "sh":
            proc = subprocess.run(["sh", "-e", "-c", b.source], cwd=where, capture_output=True,
                                  text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, f"{b.name} failed:\n{proc.stdout}{proc.stderr}"


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _processes(marker: str) -> int:
    m = re.fullmatch(r"processes=(\d+)", marker)
    return int(m.group(1)) if m else 1


def test_markers_are_known_and_blocks_found() -> None:
    assert len(PYTHON) >= 10, [b.name for b in PYTHON]
    for b in ALL:
        ok = b.marker in ("", "fragment") or re.fullmatch(r"processes=\d+", b.marker) \
            if b.lang == "python" else b.marker in ("", "sh")
        assert ok, f"{b.name}: unknown doc-test marker {b.marker!r} on a {b.lang} block"
    fragments = [b.name for b in PYTHON if b.marker == "fragment"]
    assert len(fragments) <= 3, f"too many fragments: {fragments}"


def test_port_substitution() -> None:
    src = 'h = ["http://127.0.0.1:9001", "https://127.0.0.1:9002", "http://127.0.0.1:9001"]\n' \
          'listen = ("127.0.0.1", 9002)\n'
    out = with_free_ports(src)
    ports = PORT.findall(out)
    assert len(ports) == 4 and "9001" not in out and "9002" not in out
    assert ports[0][1] == ports[2][1] and ports[1][1] == ports[3][1] != ports[0][1]


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    if block.marker == "fragment":
        compile(block.source, block.name, "exec")
        return
    _setup(block, tmp_path)
    script = tmp_path / "example.py"
    script.write_text(with_free_ports(block.source))
    n = _processes(block.marker)
    args = [[str(i + 1)] if n > 1 else [] for i in range(n)]
    procs = [subprocess.Popen([sys.executable, str(script), *a], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a in args]
    deadline = time.monotonic() + TIMEOUT
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"{block.name} (process {i + 1} of {n}) exited " \
                                  f"{p.returncode}:\n{out}"


def test_two_process_example_prints_what_the_readme_says(tmp_path: Path) -> None:
    """The README's first example, run as its two nodes: each calls the other."""
    block = next(b for b in PYTHON if b.doc.name == "README.md" and b.marker == "processes=2")
    script = tmp_path / "node.py"
    script.write_text(with_free_ports(block.source))
    procs = [subprocess.Popen([sys.executable, str(script), str(i)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in (1, 2)]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert out.splitlines()[:4] == ["b'ping'", "b'ping'", "lookup failed: not found",
                                        "CONNECTED"], out


def test_readme_example_passes_mypy_strict(tmp_path: Path) -> None:
    block = next(b for b in PYTHON if b.doc.name == "README.md" and b.marker == "processes=2")
    script = tmp_path / "node.py"
    script.write_text(block.source)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", str(script)], cwd=ROOT,
                          env={**_env(), "MYPYPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_guides_exist_and_are_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for guide in ("API", "streams", "typed", "deploying", "tls", "go-interop", "protocol"):
        assert (ROOT / "docs" / f"{guide}.md").is_file(), guide
        assert f"(docs/{guide}.md)" in readme, guide


def test_section_citations_resolve_in_the_protocol_document() -> None:
    """Every ``§n`` the code and docs cite is a section of docs/protocol.md."""
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", protocol, re.M))
    cited: set[tuple[str, str]] = set()
    paths = [*ROOT.glob("grid/**/*.py"), *ROOT.glob("grid/*.pyx"), *ROOT.glob("grid/*.pxi"),
             *ROOT.glob("grid/*.pxd"), *ROOT.glob("tests/**/*.py"), ROOT / "README.md",
             ROOT / "ARCHITECTURE.md", *ROOT.glob("docs/*.md")]
    for path in paths:
        for ref in re.findall(r"(?<!\d )§ ?(\d+(?:\.\d+)*)", path.read_text()):  # not RFC 6455 §n
            cited.add((str(path.relative_to(ROOT)), ref))
    missing = sorted((p, r) for p, r in cited if r not in sections)
    assert not missing, missing
    assert "GRID-PROTOCOL" not in "".join(p.read_text() for p in paths if p.suffix == ".md")
