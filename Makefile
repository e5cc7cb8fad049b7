# Set-up and entry points. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= ../shared/data
BENCH  ?= nats-sss
SAMPLE ?= 1000

.PHONY: test reproduce venv clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The torch/torchvision pair that lies on this machine's disk (CPU-capable CUDA build).
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e ".[test,train,ray]"
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed  ## run the test suite
	ZCPROXY_DATA=$(DATA) $(PY) -m pytest -q

reproduce: $(VENV)/.installed  ## Table 4: score a sample of BENCH and write results/correlate/BENCH
	ZCPROXY_DATA=$(DATA) $(PY) -m zcproxy.correlate --bench $(BENCH) --sample $(SAMPLE) \
		--out results/correlate/$(BENCH) --plot

clean:
	rm -rf $(VENV) build *.egg-info
