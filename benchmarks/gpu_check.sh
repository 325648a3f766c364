#!/usr/bin/env bash
# GPU check of sweeps and flows: results against the host CPU, and the throughput tables.
# Run from the repository root on a machine with a GPU (jax[cuda] installed):
#   bash benchmarks/gpu_check.sh            # ≈ 5–6 minutes on an H100 (FLOWSOLVE_GPU_CHECK_BUDGET_S caps part 3)
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=. python3 benchmarks/gpu_sweep_check.py
