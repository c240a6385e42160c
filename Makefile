# The two commands of the README: `make demo` and `make test`. Both set up .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision are left to pip's resolver within the project's loose bounds (torch>=2.4);
# on a machine with a CUDA build already chosen, set TORCH_SPEC to pin it.
TORCH_SPEC ?= torch torchvision

.PHONY: demo test test-slow install data clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST for the demo and the real-data tests: Debian's package where apt works; otherwise the demo
# downloads it through torchvision.
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "apt could not install dataset-fashion-mnist; the demo will download Fashion-MNIST"; fi

demo: install data
	$(VENV)/bin/diffbalance run --out runs/demo

test: install data
	$(PY) -m pytest -q

test-slow: install data
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs
