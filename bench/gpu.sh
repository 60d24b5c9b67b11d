#!/usr/bin/env bash
# The GPU benchmarks in one command (issue 22 part 5), under 8 minutes on one H100, ending with one markdown
# table that names the card, the date and torch's version:
# - proposals of the full model at 800 px, batch 1 (latency) and batch 8 (throughput), against the careful
#   torchvision baseline with fp16 autocast (bench/propose.py, on a checkpoint it trains first: no pretrained
#   weights are needed, bench/prepared.py);
# - training iterations per second against the plain torchvision loop (bench/train.py);
# - assist per box and per click, and its feature computation (bench/assist.py);
# - peak GPU memory (torch.cuda.max_memory_allocated) of each.
#
#   bash bench/gpu.sh            # on a GPU machine
#   bash bench/gpu.sh --quick    # the same steps on the CPU with tiny sizes, in well under a minute
#   bash bench/gpu.sh --wheels   # where PyPI is reachable: fetch into .whl/ the wheels a bare GPU machine lacks
#
# A GPU machine with torch and torchvision but without this project's other packages needs no install: the
# scripts import this checkout, and pycocotools, SQLAlchemy, alembic and Mako come from .whl/ (made by
# --wheels; carried along with the checkout), installed into a folder of their own when they are missing.
# Logs go to $GPU_BENCH_LOGS (default: a new temporary folder), and to $OUT too when it is set.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-gpu}
case "$mode" in gpu|--quick|--wheels) ;; *) echo "usage: bash bench/gpu.sh [--quick|--wheels]" >&2; exit 2 ;; esac
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if [ "$mode" = --wheels ]; then  # for the GPU machine's Python (3.12, x86-64), one version of each
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "pycocotools>=2.0.7,<2.1" "SQLAlchemy>=2.0.25,<3" "alembic>=1.13,<2" "Mako>=1.3"
    exit 0
fi

if ! "$PY" -c "import pycocotools, sqlalchemy, alembic" 2>/dev/null; then
    if ! ls .whl/*.whl >/dev/null 2>&1; then
        echo "pycocotools, SQLAlchemy or alembic is missing and there is no .whl/: run bash bench/gpu.sh --wheels" \
             "where PyPI is reachable, and carry .whl along" >&2
        exit 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/maskloop-site .whl/*.whl
    export PYTHONPATH=/tmp/maskloop-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOGS=${GPU_BENCH_LOGS:-$(mktemp -d)}
mkdir -p "$LOGS"

if [ "$mode" = --quick ]; then  # tiny sizes on the CPU: proves the steps and the table, measures nothing
    propose=(--size tiny --image-size 48 --images 2 --batch-size 2 --repeats 1 --prep-iters 2 --device cpu)
    train=(--size tiny --image-size 48 --images 6 --iters 1 --batch-size 2 --repeats 1 --device cpu)
    assist=(--size tiny --image-size 64 --images 1 --boxes 2 --device cpu)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no GPU: use --quick')"
    propose=(--size full --image-size 800 --images 16 --batch-size 8 --repeats 3 --prep-iters 300 --device cuda)
    train=(--size full --image-size 800 --images 40 --iters 20 --batch-size 4 --repeats 3 --device cuda)
    assist=(--size full --image-size 800 --images 3 --boxes 30 --device cuda)
fi

failed=()
step() {  # name, command...: its output to the screen and to LOGS/name.log; a failure does not stop the others
    local name=$1; shift
    echo "== $name: $*"
    local t0=$SECONDS
    if ! "$@" 2>&1 | tee "$LOGS/$name.log"; then
        failed+=("$name")
    fi
    echo "== $name: $((SECONDS - t0)) s"
}
step propose "$PY" bench/gpu.py peak bench/propose.py "${propose[@]}"
step train "$PY" bench/train.py "${train[@]}"
step assist "$PY" bench/assist.py "${assist[@]}"
"$PY" bench/gpu.py table "$LOGS" | tee "$LOGS/table.md"
if [ -n "${OUT:-}" ] && [ -d "$OUT" ]; then cp "$LOGS"/*.log "$LOGS/table.md" "$OUT"/; fi
echo "(logs in $LOGS)"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (their rows show ?; see their logs)" >&2
    exit 1
fi
