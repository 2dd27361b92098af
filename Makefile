# The two commands of the README:  make demo  |  make test
# Both create .venv, install llmbuild with torch pinned to the CPU build (torch==2.13.0: an open range
# would pull a multi-GB CUDA build), and llama-cpp-python (llama.cpp's runtime, compiled once into
# $(WHEELS) and reused; LLAMACPP=0 skips it and GGUF artifacts are then marked unverified).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PIP := $(VENV)/bin/pip
LLAMACPP ?= 1
LLAMACPP_VERSION ?= 0.3.36
# llama.cpp's default build tunes for the compiling CPU (GGML_NATIVE), which makes a cached wheel crash
# on another CPU, and its AMX kernels segfault on small matrices (seen on a Sapphire Rapids VM:
# ggml_backend_amx_mul_mat on the tiny test models). So the wheel targets x86-64-v3 (AVX2/FMA/F16C),
# which every x86 server of the last decade runs, and the cache folder is named after these flags
# (--no-cache-dir: pip's own wheel cache would hand back a wheel built with other flags).
LLAMACPP_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON,-DGGML_NATIVE=OFF)
WHEELS ?= $(HOME)/.cache/llmbuild-wheels/$(if $(filter x86_64,$(shell uname -m)),x86-64-v3,portable)

# llama.cpp's own tokenizer test data (models/ggml-vocab-*.gguf with .inp/.out strings and expected ids, and
# models/templates/*.jinja chat templates), from the llama-cpp-python sdist on PyPI: fetched once, only those
# files kept. tests/tokenizers reads them through LLMBUILD_TEST_DATA and skips, saying why, without them.
TEST_DATA ?= $(HOME)/.cache/llmbuild-test-data/llama-cpp-python-$(LLAMACPP_VERSION)

.PHONY: demo test test-data install llamacpp clean

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,monitor]'
	touch $@

install: $(VENV)/.installed

llamacpp: install
ifeq ($(LLAMACPP),1)
	@if ! $(VENV)/bin/python -c "import llama_cpp" 2>/dev/null; then \
	  ls $(WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	    echo "building llama-cpp-python $(LLAMACPP_VERSION) from source once (about 6 min on 2 cores)"; \
	    CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(PIP) wheel -q --no-cache-dir --no-deps llama-cpp-python==$(LLAMACPP_VERSION) -w $(WHEELS); }; \
	  $(PIP) install -q $(WHEELS)/llama_cpp_python-$(LLAMACPP_VERSION)-*.whl; \
	fi
endif

demo: llamacpp
	HF_HUB_OFFLINE=1 $(VENV)/bin/llmbuild recipe=demo

test-data: install
	@if [ ! -f $(TEST_DATA)/.complete ]; then \
	  tmp=$$(mktemp -d) && \
	  $(PIP) download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMACPP_VERSION) -d $$tmp && \
	  mkdir -p $$tmp/x && tar -xzf $$tmp/llama_cpp_python-$(LLAMACPP_VERSION).tar.gz -C $$tmp/x --strip-components=3 \
	    --wildcards '*/vendor/llama.cpp/models/ggml-vocab-*' '*/vendor/llama.cpp/models/templates/*' && \
	  mkdir -p $$(dirname $(TEST_DATA)) && rm -rf $(TEST_DATA) && mv $$tmp/x $(TEST_DATA) && \
	  touch $(TEST_DATA)/.complete; rm -rf $$tmp; \
	  [ -f $(TEST_DATA)/.complete ] || echo "warning: could not fetch llama.cpp's vocab files; tests/tokenizers will skip them"; \
	fi

test: llamacpp test-data
	HF_HUB_OFFLINE=1 LLMBUILD_TEST_DATA=$(TEST_DATA) $(VENV)/bin/python -m pytest -q

clean:
	rm -rf outputs
