#!/usr/bin/env bash
# KernelBench level 1 at full size on the GPU: every problem in PROBLEMS_DIR with its candidate from
# benchmarks/kernelbench_candidates/ (13 Triton, 2 CUDA C++ through load_inline, one of them running
# out of memory on purpose), through `autokernel-ci kernelbench`: the whole gate, then timing against
# eager and torch.compile, one worker per GPU. Problems without a candidate are listed as MISSING.
#
#   benchmarks/kernelbench_run.sh PROBLEMS_DIR [NAME] [more kernelbench options, e.g. --only '19_*,24_*']
#
# PROBLEMS_DIR must be inside this checkout (the GPU machine gets only the checkout): copy the
# problem files into an ignored folder first and carry it, e.g.
#   mkdir -p .gpu/kb && cp ../shared/kernelbench/level1/*.py .gpu/kb/      (then carry ".gpu/kb")
# Writes $OUT/NAME.json (rows, summary, every EvalResult) and $OUT/NAME.log (table, summary, progress);
# NAME defaults to kernelbench. WORKERS (default: every visible GPU) and TIMEOUT (seconds per
# candidate process, default 400) can be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ ! -d "$1" ]; then
  echo "usage: benchmarks/kernelbench_run.sh PROBLEMS_DIR [NAME] [kernelbench options]  (PROBLEMS_DIR: a folder)" >&2
  exit 2
fi
problems=$1
shift
name=${1:-kernelbench}
[ $# -gt 0 ] && shift
out=${OUT:-kernelbench-out}
mkdir -p "$out"
workers=${WORKERS:-$(python -c "import torch; print(max(1, torch.cuda.device_count()))")}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  echo "started $(date -u +%FT%TZ) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | xargs)"
  echo "torch $(python -c 'import torch; print(torch.__version__, torch.version.cuda)'), workers $workers"
  set -x
  python -m autokernel_ci kernelbench "$problems" --candidates benchmarks/kernelbench_candidates \
    --allow static.escape:torch.utils.cpp_extension.load_inline --workers "$workers" \
    --timeout "${TIMEOUT:-400}" --json "$out/$name.json" "$@"
  { set +x; } 2>/dev/null
  echo "finished $(date -u +%FT%TZ)"
} 2>&1 | tee "$out/$name.log"
exit "${PIPESTATUS[0]}"
