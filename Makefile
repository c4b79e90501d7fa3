# The two commands of README.md: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv with the pinned dependencies on first use; nothing else is downloaded.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tvm_qnn-installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml CMakeLists.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

demo: venv
	$(PY) -m tvm_qnn.demo

test: venv
	$(PY) -m pytest -q -p no:cacheprovider tests

clean:
	rm -rf $(VENV) build *.egg-info
