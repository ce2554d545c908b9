# grid: the README's commands.  `make test` and `make demo` work on a fresh
# machine with Python >= 3.10 and a C compiler (Go too, for the interop tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.grid-installed
SOURCES := $(wildcard grid/*.pyx grid/*.pxd grid/*.pxi grid/includes/* tools/*.py) grid/_consts.py

.PHONY: all install build xxhash-header test test-accel test-pure typecheck demo bench soak fuzz asan-test clean dist

all: build

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# The compiled codec's XXH3 comes from the system's xxHash header, inlined
# (tools/buildcfg.py).  Where the header is missing and apt-get can install
# it (root on Debian/Ubuntu), this installs libxxhash-dev; where it cannot,
# the build uses the xxhash package instead and says so.  Never fails.
xxhash-header:
	@if [ -z "$$GRID_XXHASH_INCLUDE" ] && [ "$$($(PYTHON) tools/buildcfg.py)" = xxhash-package ] \
		&& [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "grid: installing libxxhash-dev (apt-get) for the compiled XXH3"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q libxxhash-dev >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libxxhash-dev >/dev/null 2>&1; } \
		|| echo "grid: could not install libxxhash-dev; the build uses the xxhash package"; \
	fi

# Installs the project (editable) with its test extras into .venv.
$(STAMP): $(PY) pyproject.toml setup.py | xxhash-header
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(STAMP)

# Compiles grid._codec, grid._mux and grid._struct in place (warnings are errors).
build: xxhash-header $(STAMP) $(SOURCES)
	$(PY) setup.py -q build_ext --inplace

test: build
	$(MAKE) typecheck
	$(MAKE) test-accel
	$(MAKE) test-pure

# The public API is typed: mypy --strict over grid/ (settings in pyproject.toml).
typecheck: $(STAMP)
	$(PY) -m mypy

test-accel:
	GRID_REQUIRE_ACCEL=1 $(PY) -m pytest -q $(PYTEST_ARGS)

test-pure:
	GRID_PURE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

demo: build
	$(PY) -m grid demo

BENCH_ARGS ?=
# Every benchmark under a progress bar, tables as each finishes (e.g.
# BENCH_ARGS="--quick --plot bench.png"; options: benchmarks/run_all.py --help).
bench: build
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/run_all.py $(BENCH_ARGS)

SOAK_ARGS ?=
# Long run of a 3-node grid (default 30 min; SOAK_ARGS="--minutes 0.5" for a short one).
soak: build
	$(PY) soak/run.py $(SOAK_ARGS)

fuzz: build
	$(PY) -m pip install -q -e ".[fuzz]"
	$(PY) fuzz/run.py --runs 1000000

# The compiled core under AddressSanitizer: codec tests and a short fuzz run,
# then the normal build again.
ASAN_LIB = $(shell gcc -print-file-name=libasan.so)
asan-test: $(STAMP)
	GRID_ASAN=1 $(PY) setup.py -q build_ext --inplace --force
	LD_PRELOAD=$(ASAN_LIB) ASAN_OPTIONS=detect_leaks=0 GRID_REQUIRE_ACCEL=1 \
		$(PY) -m pytest -q -p no:cacheprovider tests/codec/test_codec_vectors.py tests/codec/test_frames.py \
		tests/codec/test_codec_properties.py tests/mux/test_mux.py tests/codec/test_fuzz_smoke.py \
		tests/codec/test_large_frames.py tests/codec/test_struct_codec.py tests/streams/test_streams.py \
		tests/codec/test_crc_backend.py
	$(PY) setup.py -q build_ext --inplace --force

dist: $(STAMP)
	$(PY) -m build

clean:
	rm -rf build dist *.egg-info grid/*.so grid/*.c grid/*.html grid/_consts.pxi
