"""A bounded run of the differential fuzz harness (fuzz/fuzz_codec.py), so CI
catches crashes and twin disagreements without a fuzzing job: 20k
deterministic mutations of the seed corpus in-process, plus a short
coverage-guided atheris run when atheris is installed (``.[fuzz]``)."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import codec_cy

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"grid_fuzz_{name}", FUZZ / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


harness = _load("fuzz_codec")
seeds = _load("seeds")


def _mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """libFuzzer-style mutations that respect nothing, applied 1-4 times (mostly once)."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 4))):
        k = rng.randrange(8)
        if k == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif k == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7E, 0x7F, 0x80, 0xC0, 0xC4, 0xCC, 0xCF, 0xD3, 0xFF])
        elif k == 2:
            i = rng.randint(0, len(b))
            b[i:i] = rng.randbytes(rng.randint(1, 10))
        elif k == 3 and len(b) > 2:
            i = rng.randrange(2, len(b))
            del b[i:i + rng.randint(1, 12)]
        elif k == 4:
            del b[rng.randint(0, len(b)):]
        elif k == 5 and len(b) > 2:
            i = rng.randrange(2, len(b))
            b[i:i] = b[i:i + rng.randint(1, 32)]
        elif k == 6:  # splice with another seed
            other = rng.choice(corpus)
            b = b[:rng.randint(0, len(b))] + other[rng.randint(2, max(2, len(other))):]
        elif k == 7 and b:
            b[0] = rng.randrange(256)  # other target / role / limit
    return bytes(b)


def test_harness_sees_every_twin():
    twins = harness.load_twins()
    names = [t.__name__ for t in twins]
    assert names == ["grid._codec_py"] + (["grid._codec"] if codec_cy is not None else [])


def test_seed_corpus_is_clean():
    corpus = seeds.seeds(64)
    assert len(corpus) > 250
    kinds = {d[0] & 3 == 3 for d in corpus}
    assert kinds == {True, False}
    for data in corpus:
        harness.check_one(data)


def test_harness_reports_disagreement(monkeypatch):
    # The harness must actually compare: a twin that decodes differently is caught.
    from grid import _codec_py

    class Skewed:
        __name__ = "skewed"

        def __getattr__(self, name):
            return getattr(_codec_py, name)

        @staticmethod
        def decode_message(data):
            m = _codec_py.decode_message(data)
            m.seq += 1
            return m

    monkeypatch.setattr(harness, "TWINS", [_codec_py, Skewed()])
    with pytest.raises(AssertionError, match="decode_message differs"):
        harness.check_one(b"\x00\x00" + _codec_py.encode_message(1, 2, 3, 4, 5, 0, b"x"))


def test_fuzz_smoke_20k():
    harness.load_twins()
    corpus = seeds.seeds(48, seed=1)
    rng = random.Random(0x6772_6964)
    for i in range(20_000):
        data = _mutate(rng.choice(corpus), corpus, rng)
        try:
            harness.check_one(data)
        except Exception as exc:  # report the input that broke it
            pytest.fail(f"fuzz input #{i} {data.hex()}: {type(exc).__name__}: {exc}")


def test_atheris_short_run(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install -e '.[fuzz]')")
    out = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), "--runs", "20000", "--seed", "1",
         "--corpus", str(tmp_path / "corpus"), "--artifacts", str(tmp_path / "artifacts")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Done 20000 runs" in out.stderr
    assert not list((tmp_path / "artifacts").iterdir())
