#!/usr/bin/env bash
# One-command GPU check (issue 16): the device-dependent tests, then throughput on the GPU.
#   bash benchmarks/gpu_check.sh            # from the checkout, after `make venv`
# Where no CUDA device exists it says so and exits 0 (nothing to check).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export ZCPROXY_DATA=${ZCPROXY_DATA:-../shared/data}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA device visible to torch on this machine; nothing to check."
    exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.device_count(), "x", torch.cuda.get_device_name(0), "torch", torch.__version__)'
"$PY" -m pytest -v -s tests/test_gpu.py
out=$(mktemp -d)
echo "== correlate --bench nats-tss --sample 1000 --device cuda"
start=$(date +%s)
"$PY" -m zcproxy.correlate --bench nats-tss --sample 1000 --device cuda --out "$out/correlate" \
    --bootstrap 0 --no-progress > "$out/correlate.log"
secs=$(( $(date +%s) - start ))
echo "   1000 archs in ${secs} s: $(( 1000 / (secs > 0 ? secs : 1) )) arch/s (scores in $out/correlate)"
echo "== ESFormer search, 2 minutes on cuda"
"$PY" -m zcproxy.search --target s0 --device cuda --total-minutes 2 --multistart-minutes 0.2 \
    --phase-minutes 0.3 --out "$out/search" > "$out/search.log" 2>&1
"$PY" - "$out/search/log.jsonl" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
scored = [l for l in lines if "arch" in l or "candidate" in l]
print(f"   {len(scored)} candidates scored in 2 minutes ({len(scored) / 2:.0f}/min)")
PY
echo "gpu_check: done; outputs in $out"
