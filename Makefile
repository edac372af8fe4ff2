# The README's two commands: `make demo` (set up + run the main job) and `make test`.
# Both create .venv and install what they need on first use (torch 2.13.0 CPU build first), at the
# versions the committed reports were measured with (constraints.txt).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Real data: PneumoniaMNIST + Kermany X-rays beside the checkout (override: make demo DATA=/path)
DATA   ?= $(abspath ../shared/data)
OUT    ?= results/demo
export CXR_DATA_DIR ?= $(DATA)
# ONNX Runtime flavour, never both in one .venv: gpu (onnxruntime-gpu, which also runs on the CPU;
# the default on x86-64 Linux, where the reports were measured with it) or cpu (onnxruntime)
ENGINE ?= $(shell uname -sm | grep -qx 'Linux x86_64' && echo gpu || echo cpu)
OTHER_ENGINE := $(if $(filter gpu,$(ENGINE)),onnxruntime,onnxruntime-gpu)
EXTRAS ?= $(ENGINE),openvino,tui,bench,convert,dev
STAMP  := $(VENV)/.installed-$(ENGINE)

.PHONY: setup demo test bench clean pacs-tools

setup: $(STAMP)

# Switching flavour: both share site-packages/onnxruntime/, so both are removed before one is installed.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	if $(BIN)/python -m pip show --quiet $(OTHER_ENGINE) 2>/dev/null; then \
		$(BIN)/python -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu; fi
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed*
	touch $@

# The main job on the built-in defaults: the shipped reference model -> the CPU bundle (checked on
# the real test split) -> triage of a folder of real full-size X-rays with that bundle.
demo: setup
	$(BIN)/python -m converters evaluate --data $(DATA)
	$(BIN)/python -m converters build --target cpu --data $(DATA) --out dist
	rm -rf $(OUT)
	$(BIN)/python -m runtime triage $(DATA)/cxr_samples --bundle dist/cpu --out $(OUT)

# Per-target benchmark reports into benchmarks/reports/: both reference models' bundles side by
# side (tiny in dist/<target>, clinical in dist/clinical/<target>), each against its own PyTorch
# FP32 model in the same run.
bench: setup
	$(BIN)/python -m converters build --target all --data $(DATA) --out dist
	$(BIN)/python -m converters build --model clinical --target all --data $(DATA) --out dist/clinical
	$(BIN)/python -m benchmarks run --model all --dist dist --out benchmarks/reports

# The PACS tests (tests/runtime/pacs) start a real Orthanc and use dcmtk: installed here when
# missing and this is root on apt (the packages' system service is not started); else they skip
# (with CI=true they fail).
test: setup pacs-tools
	$(BIN)/python -m pytest

pacs-tools:
	@if ! command -v Orthanc >/dev/null || ! command -v storescu >/dev/null || ! command -v jpegtran >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
				--no-install-recommends orthanc orthanc-dicomweb dcmtk libjpeg-turbo-progs; \
		else echo "note: Orthanc/dcmtk/jpegtran missing (apt-get install orthanc orthanc-dicomweb" \
			"dcmtk libjpeg-turbo-progs as root): the PACS and arithmetic-JPEG tests will skip"; fi; fi

clean:
	rm -rf dist results .pytest_cache
