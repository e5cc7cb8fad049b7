# Set-up and entry points. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The benchmark data: DATA=... on the command line, else ZCPROXY_DATA, else ../shared/data.
DATA   ?= $(if $(ZCPROXY_DATA),$(ZCPROXY_DATA),../shared/data)
BENCH  ?= nats-sss
SAMPLE ?= 1000
PROXIES ?= naswot,logsynflow,entropic
WORKERS ?= 2
RUN    ?= runs/reproduce-$(BENCH)-sample$(SAMPLE)
# EXACT=1 scores with bit-exact arithmetic (then every score must equal the committed one);
# the default fast path is judged by the fidelity gate (same ranks, same tau at 3 decimals).
EXACT  ?=

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
	ZCPROXY_DATA=$(abspath $(DATA)) $(PY) -m pytest -q

# Scores afresh (never reusing a journal) into the scratch folder RUN, then compares every score
# with the committed (exact) results/correlate/BENCH and prints the verdict (exit 1 if not
# reproduced: bit parity within 1e-5 for EXACT=1, else the fast path's fidelity gate).
reproduce: $(VENV)/.installed  ## Table 4: score a sample of BENCH afresh into runs/, compare with results/
	ZCPROXY_DATA=$(abspath $(DATA)) $(PY) -m zcproxy.correlate --bench $(BENCH) --sample $(SAMPLE) \
		--proxies $(PROXIES) --no-baselines --workers $(WORKERS) --fresh --plot $(if $(EXACT),--exact) --out $(RUN)
	ZCPROXY_DATA=$(abspath $(DATA)) $(PY) -m zcproxy.verify $(RUN) results/correlate/$(BENCH) --proxies $(PROXIES)

clean:
	rm -rf $(VENV) build *.egg-info
