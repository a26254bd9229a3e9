"""Which device a model runs on, and in which precision."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def default_device() -> str:
    """cuda when torch sees a GPU, else cpu. Without an NVIDIA driver the answer is cpu without
    importing torch (about 300 MB of resident memory the ONNX Runtime path does not need)."""
    if os.environ.get("HNMINE_DEVICE"):
        return os.environ["HNMINE_DEVICE"]
    if not Path("/proc/driver/nvidia/version").exists() and not shutil.which("nvidia-smi"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_precision(precision: str, device: str) -> str:
    """auto = fp16 on a GPU (twice the speed, vectors within ~1e-3 of fp32), fp32 elsewhere."""
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return precision
