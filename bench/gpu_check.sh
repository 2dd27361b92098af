#!/usr/bin/env bash
# The GPU checks of the trtllm and tensorrt targets (issue 6), one script, under 8 minutes on one H200:
#   bash bench/gpu_check.sh [WORKDIR]          (default WORKDIR: outputs/gpu-check)
# 1. the machine (nvidia-smi), 2. a Python whose torch sees the GPU, 3. `pip install tensorrt` if it is
# missing (allowed to fail: that part is then skipped), 4. bench/gpu_check.py: FP8 GEMMs of the trtllm FP8 (per-tensor and per-channel)
# checkpoint (torch._scaled_mm) against bf16, prefill/decode timing of the bf16 model, the TensorRT engine.
# Every part that cannot run says SKIP and why; figures end as a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-outputs/gpu-check}
mkdir -p "$WORK"
LIMIT=${GPU_CHECK_LIMIT_S:-470}   # leaves room under 8 minutes for the setup steps above the python part
NO_INSTALL=${GPU_CHECK_NO_INSTALL:-0}  # 1: never pip install (a dry run on a machine without a GPU)

echo "== machine"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader || echo "SKIP: nvidia-smi failed"
else
  echo "SKIP: nvidia-smi not found (no NVIDIA driver on this machine)"
fi

echo "== python"
PY=""
for cand in "${PYTHON:-}" .venv/bin/python python3; do
  [ -n "$cand" ] || continue
  command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ] || continue
  if "$cand" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    PY=$cand; break
  fi
  [ -n "$PY" ] || FALLBACK=${FALLBACK:-$cand}
done
if [ -z "$PY" ]; then
  PY=${FALLBACK:-python3}
  echo "SKIP: no Python here has a torch that sees a CUDA device; running $PY, whose GPU parts will say SKIP"
fi
"$PY" -c "import torch; print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')" \
  || { echo "FAIL: $PY cannot import torch"; exit 1; }
missing=$("$PY" -c "import importlib.util as u; print(' '.join(m for m in ('transformers','safetensors','sentencepiece','onnx','onnxruntime','onnxscript','yaml') if u.find_spec(m) is None))")
if [ -n "$missing" ] && [ "$NO_INSTALL" = 1 ]; then
  echo "SKIP: not installing ($missing): GPU_CHECK_NO_INSTALL=1"
elif [ -n "$missing" ]; then
  echo "installing what llmbuild needs: $missing"
  timeout 180 "$PY" -m pip install -q transformers safetensors sentencepiece onnx onnxruntime onnxscript pyyaml \
    || echo "SKIP: could not install ($missing); parts that need them will fail and say so"
fi

echo "== tensorrt"
if "$PY" -c "import tensorrt" >/dev/null 2>&1; then
  "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)"
elif [ "$NO_INSTALL" = 1 ]; then
  echo "SKIP: tensorrt is not installed (GPU_CHECK_NO_INSTALL=1: not trying pip install tensorrt)"
elif timeout 240 "$PY" -m pip install -q tensorrt >/dev/null 2>&1 && "$PY" -c "import tensorrt" >/dev/null 2>&1; then
  "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__, '(installed now)')"
else
  echo "SKIP: tensorrt is not installed and pip install tensorrt did not work here (no index reachable?)"
fi

echo "== checks (limit ${LIMIT} s)"
rc=0
HF_HUB_OFFLINE=1 PYTHONPATH=. timeout "$LIMIT" "$PY" bench/gpu_check.py "$WORK" || rc=$?
if [ "$rc" = 124 ]; then
  echo "FAIL: bench/gpu_check.py ran past ${LIMIT} s"
fi
exit "$rc"
