"""Environment every PyTorch process on a few CPU cores should start with (glibc reads MALLOC_* only at start-up).

Given to Ray Train workers and Serve replicas through their `runtime_env`, so clusters get it as well as the
local stack (which exports the same to every process it starts).
"""

from __future__ import annotations

# One malloc arena and no trimming or mmap churn: torch's per-step allocations stop page-faulting, which makes
# training and serving measurably faster on a few cores (benchmarks/README.md, "Process settings").
TORCH_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_THRESHOLD_": "4294967296",
    "MALLOC_TRIM_THRESHOLD_": "4294967296",
}
