#!/usr/bin/env bash
# The GPU checks of docs/gpu.md as one command on the device machine (an H200; see
# /work/.library/device/README.md). Under 10 minutes: bench 320 s, PAMR 90 s, tests/gpu 150 s.
#
# Here, once:   python bench/gpu_wheels.py      (Ray, open_clip and their missing needs into
#               .whl/, CamVid photos into .bench-photos/; both git-ignored, ~51 MiB)
# Device tool:  run  command "bash bench/gpu_check.sh"  carry [".whl", ".bench-photos"]
#               timeout_s 600
# Results come back in $OUT: gpu.txt, bench.log (tables at the end), pamr.log, tests-gpu.log.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 ZEGCLIP_CACHE=/tmp/zegclip-cache
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c 'import torch, ray, open_clip; print("torch", torch.__version__, "ray",
        ray.__version__, "open_clip", open_clip.__version__, "nproc", __import__("os").cpu_count())'
} 2>&1 | tee "$OUT/gpu.txt"
photos=()
if [ -d .bench-photos ]; then
    photos=(--photos .bench-photos)
    # tests/gpu read ../shared/data (it does not travel): the same photos
    mkdir -p ../shared/data/camvid/test ../shared/data/camvid/testannot
    cp -n .bench-photos/*.jpg ../shared/data/camvid/test/
    cp -n .bench-photos/testannot/*.png ../shared/data/camvid/testannot/ 2>/dev/null
fi
timeout 320 python3 bench/bench_gpu.py --device cuda --all --budget-s 270 "${photos[@]}" 2>&1 |
    tee "$OUT/bench.log"
# PAMR eager/compiled x fp32/bf16 at batch 32, 171 rows, on CamVid ground truth (synthetic scores)
timeout 90 python3 bench/bench_pamr.py --device cuda --batch 32 --repeats 5 --rows 171 --photos 4 \
    2>&1 | tee "$OUT/pamr.log"
timeout 150 python3 -m pytest -q -s -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/tests-gpu.log"
