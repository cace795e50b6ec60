"""What machine a result comes from: the CPU's model name and its INT8 / bf16 instruction sets, thread count, load and
library versions, recorded beside every benchmark result.

Example:
    >>> name, flags = cpu_model()
    >>> isinstance(name, str) and set(flags) <= set(LOW_PRECISION_FLAGS)
    True
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any, Union

import torch

__all__ = ["LOW_PRECISION_FLAGS", "cpu_model", "machine_info"]


LOW_PRECISION_FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, list[str]]:
    """The CPU's model name and which of :data:`LOW_PRECISION_FLAGS` it has.

    Args:
        cpuinfo: Linux's CPU description; elsewhere (no such file) the name is what ``platform`` knows and the flags
            list is empty.

    Returns:
        ``(name, flags)``, e.g. ``("AMD EPYC", ["avx512_vnni", "avx512_bf16"])``: the ratios INT8 : bf16 : fp32 reach
        on a CPU with AMX are not those of one without, so every benchmark result records them.

    Example:
        >>> name, flags = cpu_model()
        >>> isinstance(name, str) and set(flags) <= set(LOW_PRECISION_FLAGS)
        True
    """
    name, flags = "", set()
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return name or platform.processor() or platform.machine(), [f for f in LOW_PRECISION_FLAGS if f in flags]


def machine_info(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Device, CPU (model name and INT8 / bf16 instruction sets), thread count and library versions, recorded beside
    every result."""
    device = torch.device(device)
    cpu, flags = cpu_model()
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_low_precision": flags,
        "threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info
