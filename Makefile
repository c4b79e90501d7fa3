# The two commands of README.md: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv with the pinned dependencies on first use; nothing else is downloaded.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvm_qnn-installed

# Debian packages the project uses (installed when missing; needs root and apt-get).
# g++ and cmake build the accelerator simulator during the pip install, so they come first.
SYSTEM_PACKAGES := g++ cmake dataset-fashion-mnist qemu-user gcc-aarch64-linux-gnu \
	gcc-arm-linux-gnueabihf llvm-19 verilator yosys nextpnr-ice40 iverilog

# apt verifies signatures as its sandbox user _apt; where that user cannot (e.g. /dev/null not
# writable by others), root can do it without the sandbox.
APT_AS_ROOT := apt-get -o APT::Sandbox::User=root

.PHONY: demo test venv sysdeps data clean

venv: sysdeps $(STAMP)

sysdeps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  { apt-get install -y -q $$missing || { { apt-get update -q || $(APT_AS_ROOT) update -q; } \
	    && apt-get install -y -q $$missing; }; } >/dev/null 2>&1 \
	  || echo "warning: could not install$$missing (not root or no apt-get); tests needing them will say so"; \
	fi

data: sysdeps

$(STAMP): pyproject.toml CMakeLists.txt | sysdeps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

# DEMO_ARGS: e.g. --target x86:haswell (AVX2 code, on any CPU that has AVX2).
demo: venv
	$(PY) -m tvm_qnn.demo $(DEMO_ARGS)

# Test modules run in parallel, one module per worker at a time (their shared fixtures stay
# in one process): one worker per core, at most 4 (each tune also starts build workers).
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

test: venv
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder tests

clean:
	rm -rf $(VENV) build *.egg-info
