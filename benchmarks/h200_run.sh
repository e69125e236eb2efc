#!/bin/bash
# One device call (benchmarks/RESULTS.md, 2026-12-03): calibrate, model_e2e, the GPU tests, anchors.
# Run from a copy of the repository holding .whl/ (liger-kernel wheel) and anchors/autokernel/.
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 AUTOKERNEL_CACHE_DIR=/tmp/akc
start=$(date +%s)
el() { echo "[$(( $(date +%s) - start )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv | tee $OUT/env.log
timeout 60 python3 -c "
import json; from autokernel_ci.harness.device import calibrate
c = calibrate(); print(json.dumps({'bw_TBs': c.bandwidth_bytes_per_s/1e12, 'tflops': {k: v/1e12 for k, v in c.flops_per_s.items()}, 'runs': c.details['runs']}))
" 2>&1 | tee $OUT/calibrate.log
el model_e2e
timeout 270 python3 benchmarks/model_e2e.py 2>&1 | tee $OUT/model_e2e.log | grep -v "^ " | tail -45
el gpu tests
timeout 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_timing.py tests/test_compile.py tests/test_device.py 2>&1 | tee $OUT/gpu_tests.log | tail -15
el anchors
left=$(( 450 - ($(date +%s) - start) ))
[ $left -gt 30 ] && timeout $left python3 benchmarks/anchors.py --anchors anchors/autokernel 2>&1 | tee $OUT/anchors.log | grep -v "^    .*Error" 
el done
exit 0
