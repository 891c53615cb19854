#!/bin/bash
# The device checks on a GPU machine, in one call: the CUDA tests, a smoke table on --device cuda, and
# make bench's GPU parts (throughput.json for `plan`). Outputs go to $OUT (default /tmp/gpu_check).
# Wheels the machine lacks (kmeans1d, submitit) can sit in .whl/ and are installed to /tmp/site first.
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
{ nvidia-smi -L; nproc; python3 -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$OUT/env.log"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_bench_data.py::test_gpu_decode_matches_cpu_decode" 2>&1 | tee "$OUT/cuda_tests.log"
echo "== smoke table1 on cuda"
( time timeout 120 python3 -m benchmarks run table1 --scale smoke --device cuda --results /tmp/r --no-progress ) 2>&1 | tail -25 | tee "$OUT/smoke_cuda.log"
echo "== bench"
( time timeout 200 python3 -m benchmarks.bench --no-sklearn --steps 10 --whole-steps 0 --loader-images 512 --resnet-steps 5 --results "$OUT/res" ) 2>&1 | tee "$OUT/bench.log"
