#!/bin/bash
# Prepares .gpu/ (git-ignored) for scripts/gpu_session.sh on a lent GPU machine: the sentence file
# bench_gpu.py builds its corpus from, all-MiniLM-L6-v2 saved in fp16, and wheels (Python 3.12,
# manylinux x86-64) of the packages hnmine needs that the machine's image lacks. Run it here, then
# the device call with carry [".gpu"] and the command `bash scripts/gpu_session.sh` (docs/gpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
mkdir -p .gpu/wheels
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
$PY -c "
import sys; sys.path.insert(0, 'scripts')
from pathlib import Path
from bench_scale import sentences_file
sentences_file(Path('.gpu'))
import torch
from sentence_transformers import SentenceTransformer
from hnmine.packaged.resolve import resolve_model
model = SentenceTransformer(resolve_model('all-MiniLM-L6-v2'), device='cpu')
model.half().save(str(Path('.gpu') / 'all-MiniLM-L6-v2-fp16'))
"
# absent from the image (the device tool's KINDS.md package list), at this environment's versions,
# which are known to work together
PINS=$($PY -c "
import importlib.metadata as m
names = 'nanotoken pydantic pydantic-core annotated-types typing-inspection tomli-w gguf bm25s PyStemmer datasets dill multiprocess'
print(' '.join(f'{n}=={m.version(n)}' for n in names.split()))")
rm -f .gpu/wheels/*.whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels \
    $PINS
du -sh .gpu
