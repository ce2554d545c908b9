# grid: the README's commands.  `make test` and `make demo` work on a fresh
# machine with Python >= 3.10 and a C compiler (Go too, for the interop tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
STAMP := $(VENV)/.grid-installed
SOURCES := $(wildcard grid/*.pyx grid/*.pxd grid/*.pxi grid/includes/* tools/*.py) grid/_consts.py

.PHONY: all install build xxhash-header test test-accel test-pure typecheck demo bench soak fuzz asan-test clean dist \
	test-pythons wheels wheel-check release-tools

all: build

$(PY):
	@echo "grid: creating $(VENV) with $(PYTHON)"
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
	@echo "grid: installing the project and its test extras into $(VENV) (about 1.5 min the first time)"
	$(PY) -m pip install -e ".[test]"
	@echo "grid: installed"
	touch $@

install: $(STAMP)

# Compiles grid._codec, grid._mux and grid._struct in place (warnings are errors).
build: xxhash-header $(STAMP) $(SOURCES)
	@echo "grid: compiling the Cython core (grid._codec, grid._mux, grid._struct)"
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

# Other supported CPythons: each gets its own venv (.venv/versions/3.10, ...) made from
# pyenv's interpreter (else pythonX.Y on PATH), the project installed there
# with its test extras, the compiled core built in place for it (the .so names
# carry the Python version, so they sit beside the default build's), and the
# whole accelerated suite.  `make test-py3.12` runs one version.
EXTRA_PYTHONS ?= 3.10 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
python_for = $(or $(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1)))),$(shell command -v python$(1)))

.venv/versions/%/.grid-installed: pyproject.toml setup.py | xxhash-header
	@test -n "$(call python_for,$*)" || { echo "grid: no Python $* (looked in $(PYENV_ROOT)/versions and PATH)"; exit 1; }
	test -x .venv/versions/$*/bin/python || $(call python_for,$*) -m venv .venv/versions/$*
	.venv/versions/$*/bin/python -m pip install -q --upgrade pip
	.venv/versions/$*/bin/python -m pip install -q -e ".[test]"
	touch $@

test-py%: .venv/versions/%/.grid-installed $(SOURCES)
	.venv/versions/$*/bin/python setup.py -q build_ext --inplace
	GRID_REQUIRE_ACCEL=1 .venv/versions/$*/bin/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

.PRECIOUS: .venv/versions/%/.grid-installed

test-pythons: $(addprefix test-py,$(EXTRA_PYTHONS))

demo: build
	@echo "grid: running the demo"
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

# Release artefacts (tools/wheels.py): the sdist, then from it one wheel per
# supported CPython (WHEEL_PYTHONS, found under pyenv or on PATH), each built
# in pip's isolated environment and given its manylinux_2_* tag by auditwheel,
# all in dist/; then wheel-check.  The tools come from
# tools/release-requirements.txt into $(VENV).
WHEEL_PYTHONS ?= 3.10 3.11 3.12 3.13
RELEASE_STAMP := $(VENV)/.grid-release-tools
RELEASE_ENV := PATH="$(abspath $(VENV))/bin:$$PATH"

$(RELEASE_STAMP): $(PY) tools/release-requirements.txt
	$(PY) -m pip install -q -r tools/release-requirements.txt
	touch $@

release-tools: $(RELEASE_STAMP)

wheels: $(RELEASE_STAMP) | xxhash-header
	$(RELEASE_ENV) $(PY) tools/wheels.py build --pythons "$(WHEEL_PYTHONS)"
	$(MAKE) wheel-check

# Every artefact in dist/: twine check, contents, and an install of each wheel
# into a new venv of its own Python (no compiler, no build tools) followed by
# tools/wheel_smoke.py; the sdist must refuse to build without a compiler and
# install the pure package with GRID_PURE=1.
wheel-check: $(RELEASE_STAMP)
	$(RELEASE_ENV) $(PY) tools/wheels.py check

clean:
	rm -rf build dist *.egg-info grid/*.so grid/*.c grid/*.html grid/_consts.pxi
