#!/usr/bin/env bash
# The CUDA checks and GPU throughput, on a GPU machine with no network (the `device` tool):
# torch, timm, pillow, pyarrow come with its image; pebble travels as a wheel in .whl/.
set -uo pipefail
OUT=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/pkg/embedlake && touch /tmp/pkg/embedlake/__init__.py
for d in flows tasks data sql; do ln -sfn "$PWD/$d" "/tmp/pkg/embedlake/$d"; done
export PYTHONPATH=/tmp/pkg:/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, timm, PIL; print('torch', torch.__version__, 'timm', timm.__version__, 'pillow', PIL.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/unit/test_cuda.py tests/unit/test_device_decode.py \
    ${DEVICE_TESTS_EXTRA:-tests/unit/test_parity.py tests/unit/test_fold.py} 2>&1 \
    | tee "$OUT/pytest.log" | tail -25
python3 bench/gpu_throughput.py --out "$OUT/gpu.json" "$@"
