# sdhw — the two set-up/test commands are `make install` and `make test`.
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
PIP     := $(PYTHON) -m pip
JOBS    ?= 2

PES     ?= 16
DEVICE  ?= ecp5-25f

.PHONY: install test test-all lint demo demo-mnist bench models verilog formal clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v iverilog >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing iverilog (Debian package)"; \
	    (apt-get install -y -qq iverilog >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq iverilog >/dev/null)) ; \
	  else echo "note: iverilog missing and apt-get not permitted; RTL simulation tests will be skipped"; fi; }
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e ".[dev]"
	touch $@

# One BLAS thread per pytest worker: the workers already use both cores.
TEST_ENV := OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: install
	$(TEST_ENV) $(PYTHON) -m pytest -n $(JOBS) -m "not slow" -q --durations=15

test-all: install
	$(TEST_ENV) $(PYTHON) -m pytest -n $(JOBS) -q

lint: install
	$(VENV)/bin/ruff check golden sdhw rtl_gen sim fpga verify cli tests examples

# The main job on the bundled default: compile the digits MLP (compression, accuracy), then run test images
# on the generated RTL and check every output against golden.
demo: install
	$(VENV)/bin/sdhw compile golden/data/digits_mlp.npz -o build/digits_mlp.sdp --eval
	$(VENV)/bin/sdhw sim --model golden/data/digits_mlp.npz --pes $(PES) --limit 20

# The MNIST CNN (examples/): compiled and evaluated (sdhw compile exits 1 after its figures: no program file holds
# pooling layers), then 20 test images on the RTL (Verilator), the pooling on the host between the accelerator's runs
MNIST_OPTIONS = --calib examples/mnist_calib.npz --dense-layers 0 --prune 0,0.4167,0.5,0.2727 --exp-bits 3
demo-mnist: install
	-$(VENV)/bin/sdhw compile examples/mnist_cnn.onnx -o build/mnist_cnn.sdp --eval-data examples/mnist_test.npz \
		$(MNIST_OPTIONS)
	$(VENV)/bin/sdhw sim --model examples/mnist_cnn.onnx --data examples/mnist_test.npz $(MNIST_OPTIONS) \
		--limit 20 --sim verilator

# Benchmarks: JSON + Markdown under bench/
bench: install
	$(PYTHON) -m sim.bench_utilisation --out bench
	$(PYTHON) -m sim.bench_digits --out bench
	$(PYTHON) -m sim.bench_faults --out bench
	$(PYTHON) -m fpga.bench --out bench $(FPGA_BENCH_ARGS)
	$(PYTHON) -m fpga.blocks --out bench

# Verilog + manifest of one configuration: make verilog PES=16 [DEVICE=ecp5-25f] [DENSE=1]
verilog: install
	$(VENV)/bin/sdhw generate --pes $(PES) --device $(DEVICE) $(if $(DENSE),--dense,) -o build/verilog-$(PES)$(if $(DENSE),-dense,)

# SBY proofs of the blocks (PyPI tools only), each cover reached, each broken variant refuted: build/formal/
formal: install
	$(PYTHON) -m verify.run_formal --out build/formal --jobs $(JOBS)

# Re-train the bundled example models (deterministic, fixed seeds).
models: install
	$(PYTHON) examples/train_digits.py

clean:
	rm -rf build .pytest_cache
