#!/bin/bash
# One lent-GPU session's measurements (run by the device tool with carry [".gpu"], made by
# scripts/gpu_kit.sh): installs the carried wheels, then scripts/bench_gpu.py on 1M passages, the
# results in $OUT/gpu_bench.json. Render them here with
# `python scripts/bench_gpu.py --render gpu_bench.json` (docs/gpu.md's bench_gpu section).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
timeout 560 python3 scripts/bench_gpu.py --sentences .gpu/sentences.txt.gz --model .gpu/all-MiniLM-L6-v2-fp16 \
    --docs 1000000 --queries 50000 --batch-size 512 --sample 100000 --budget 65536 --workdir /tmp/gpu \
    --out "$OUT/gpu_bench.json" 2>&1 | tee "$OUT/gpu_bench.log" | grep -v Warning
