# interlink — build, lint and test entry points.
#
# A fresh clone needs exactly:   make install   (or: make demo)   and   make test
#
# Everything runs inside .venv (created with `python3 -m venv`).  The editable
# install is redone only when pyproject.toml, setup.py or anything in
# src/interlink/_native/ changed (stamp file .venv/.installed-stamp).  pip builds
# the editable wheel in a fresh isolated build directory, so reinstalling always
# recompiles the extension; setuptools copies the compiled
# src/interlink/_native.cpython-*.so next to the _native/ source directory, where
# `import interlink._native` finds it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON3 ?= python3
VENV    := .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed-stamp
EXTRAS  := test,bench,plot

NATIVE_DIR  := src/interlink/_native
NATIVE_ALL  := $(wildcard $(NATIVE_DIR)/*)
# Plain C (no Python.h): everything except the CPython glue (module*.c) and test_* helpers.
NATIVE_LIB  := $(filter-out $(NATIVE_DIR)/module%.c $(NATIVE_DIR)/test_%.c,$(wildcard $(NATIVE_DIR)/*.c))
NATIVE_HDRS := $(wildcard $(NATIVE_DIR)/*.h)

NATIVE_TESTS_DIR := tests/native
NATIVE_TESTS     := $(wildcard $(NATIVE_TESTS_DIR)/test_*.c)
NATIVE_BUILD     := build/native
NATIVE_BINS      := $(patsubst $(NATIVE_TESTS_DIR)/%.c,$(NATIVE_BUILD)/%,$(NATIVE_TESTS))
NATIVE_CFLAGS    := -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE \
                    -fsanitize=address,undefined -I$(NATIVE_DIR) -pthread

# Only the ones that exist (git does not keep empty directories).
LINT_PATHS := $(wildcard src tests benchmarks)

# Sanitizer runtimes to preload into an unsanitized python (test-asan).
LIBASAN  = $(shell $(CC) -print-file-name=libasan.so)
LIBUBSAN = $(shell $(CC) -print-file-name=libubsan.so)

.PHONY: help install demo lint test native-test test-asan bench clean distclean

help:
	@echo "make install      create .venv and install interlink (editable) with test,bench,plot extras"
	@echo "make demo         install, then run the quick benchmark (python -m interlink bench --quick)"
	@echo "make test         install, lint, native C tests, then the whole pytest suite"
	@echo "make lint         ruff check, ruff format --check, mypy --strict"
	@echo "make native-test  build and run tests/native/test_*.c under ASan+UBSan"
	@echo "make test-asan    rebuild the extension with ASan+UBSan and run pytest against it"
	@echo "make bench        run the full benchmark"
	@echo "make clean        remove build artifacts (keeps .venv; 'make distclean' removes it too)"

# ------------------------------------------------------------------ install

$(PY):
	$(PYTHON3) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml setup.py $(NATIVE_DIR) $(NATIVE_ALL) | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install -e '.[$(EXTRAS)]'
	$(PY) -c "import interlink._native as m; print('built', m.__file__)"
	touch $@

install: $(STAMP)

# ------------------------------------------------------------------ run

demo: install
	$(PY) -m interlink bench --quick

bench: install
	$(PY) -m interlink bench

# ------------------------------------------------------------------ checks

lint: install
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

# pytest exits 5 when it collected no tests; make stops on any non-zero exit.
test: install
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory native-test
	$(PY) -m pytest

$(NATIVE_BUILD)/%: $(NATIVE_TESTS_DIR)/%.c $(NATIVE_LIB) $(NATIVE_HDRS) $(wildcard $(NATIVE_TESTS_DIR)/*.h)
	@mkdir -p $(@D)
	$(CC) $(NATIVE_CFLAGS) -o $@ $< $(NATIVE_LIB)

native-test: $(NATIVE_BINS)
ifeq ($(strip $(NATIVE_TESTS)),)
	@echo "native-test: no $(NATIVE_TESTS_DIR)/test_*.c yet, nothing to run"
else
	@set -e; for t in $(NATIVE_BINS); do \
	    echo "== $$t"; \
	    ASAN_OPTIONS=abort_on_error=0:detect_leaks=1 \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    "./$$t"; \
	done; echo "native-test: $(words $(NATIVE_BINS)) passed"
endif

# The extension is rebuilt with -fsanitize=address,undefined and python (which
# is not sanitized) gets the runtimes via LD_PRELOAD.  Leak detection is off:
# CPython leaks by design at exit.  PYTHONMALLOC=malloc routes Python object
# allocations through the sanitized malloc so ASan sees overruns in them too.
# Sanitizer reports go to build/asan/ (pytest's fd capture would swallow them,
# and a report from a child process would otherwise go unnoticed); any report
# there fails the target, even if pytest itself passed.
# Tests marked `slow` are skipped here: under ASan they run several times
# slower and the sanitizer adds little on top of the normal run for them.
# The stamp is removed right after the sanitized build, so the next
# `make install` / `make test` reinstalls the normal extension.
ASAN_LOGS := $(CURDIR)/build/asan

test-asan: install
	INTERLINK_SANITIZE=1 $(PIP) install --quiet --no-deps -e .
	rm -f $(STAMP)
	@test -f "$(LIBASAN)" || { echo "libasan.so not found ($(LIBASAN))"; exit 1; }
	@test -f "$(LIBUBSAN)" || { echo "libubsan.so not found ($(LIBUBSAN))"; exit 1; }
	rm -rf $(ASAN_LOGS) && mkdir -p $(ASAN_LOGS)
	status=0; \
	LD_PRELOAD="$(LIBASAN) $(LIBUBSAN)" \
	ASAN_OPTIONS=detect_leaks=0:log_path=$(ASAN_LOGS)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_LOGS)/ubsan \
	PYTHONMALLOC=malloc \
	$(PY) -m pytest -m "not slow" || status=$$?; \
	if compgen -G '$(ASAN_LOGS)/*' >/dev/null; then \
	    echo "test-asan: sanitizer reports:"; cat $(ASAN_LOGS)/*; \
	    [ $$status -ne 0 ] || status=1; \
	fi; \
	exit $$status

# ------------------------------------------------------------------ clean

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find src -name '*.so' -delete
	find src tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
	rm -f $(STAMP)

distclean: clean
	rm -rf $(VENV)
