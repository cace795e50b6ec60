"""What machine a result comes from: the CPU's model name and its vector / INT8 / bf16 instruction sets, the CPUs and
threads, the load from other processes, and the library versions, recorded beside every benchmark result and printed
above every table (:func:`describe_machine`).

Example:
    >>> name, flags = cpu_model()
    >>> isinstance(name, str) and set(flags) <= set(LOW_PRECISION_FLAGS)
    True
"""

from __future__ import annotations

import datetime
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Union

import torch

from lightning_compress.bench.machine_load import idle_load, usable_cpus

__all__ = ["LOW_PRECISION_FLAGS", "VECTOR_FLAGS", "cpu_flags", "cpu_model", "describe_machine", "machine_info"]


LOW_PRECISION_FLAGS = ("amx_int8", "amx_bf16", "avx512_vnni", "avx_vnni", "avx512_bf16")
#: the vector instruction sets that decide what fp32 kernels reach
VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "amx_tile", "asimd", "sve")
_VERSIONS = ("torch", "lightning", "torchao", "torchvision", "transformers")


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


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> list[str]:
    """Which of :data:`VECTOR_FLAGS` and :data:`LOW_PRECISION_FLAGS` the CPU has (empty where ``cpuinfo`` is missing).

    Example:
        >>> set(cpu_flags()) <= set(VECTOR_FLAGS) | set(LOW_PRECISION_FLAGS)
        True
    """
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return []
    line = next((v for k, _, v in (x.partition(":") for x in lines) if k.strip() in ("flags", "Features")), "")
    have = set(line.split())
    return [f for f in (*VECTOR_FLAGS, *LOW_PRECISION_FLAGS) if f in have]


def _version(name: str) -> Any:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: Union[str, torch.device] = "cpu", load_s: float = 0.2) -> dict[str, Any]:
    """Device, CPU (model name, vector and INT8 / bf16 instruction sets), usable CPUs and thread count, the load
    from other processes (looked at for ``load_s`` seconds; 0: not looked at) and library versions, recorded beside
    every result.

    Example:
        >>> info = machine_info(load_s=0.0)
        >>> info["threads"] >= 1 and "torch" in info["versions"]
        True
    """
    device = torch.device(device)
    cpu, flags = cpu_model()
    load = idle_load(load_s).as_dict() if load_s > 0 else None
    info = {
        "device": device.type,
        "cpu": cpu,
        "cpu_low_precision": flags,
        "cpu_flags": cpu_flags(),
        "threads": torch.get_num_threads(),
        "usable_cpus": len(usable_cpus()),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "load_before": load,
        "torch": torch.__version__,
        "versions": {name: _version(name) for name in _VERSIONS} | {"torch": torch.__version__},
        "python": platform.python_version(),
        "time": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def describe_machine(info: dict[str, Any]) -> list[str]:
    """The lines printed above a result table: CPU and its flags, CPUs and threads, versions, load.

    Example:
        >>> describe_machine({"device": "cpu", "cpu": "Xeon", "cpu_flags": ["avx2"], "usable_cpus": 2, "threads": 2,
        ...                   "versions": {"torch": "2.14.1", "torchao": None}})  # doctest: +NORMALIZE_WHITESPACE
        ['machine: cpu, Xeon (avx2), 2 usable CPUs, 2 torch threads', 'versions: torch 2.14.1, torchao -']
    """
    flags = " ".join(info.get("cpu_flags") or []) or "no listed flags"
    lines = [
        f"machine: {info.get('device')}, {info.get('cpu')} ({flags}), {info.get('usable_cpus')} usable CPUs,"
        f" {info.get('threads')} torch threads" + (f", {info['gpu']}" if info.get("gpu") else "")
    ]
    versions = info.get("versions") or {}
    lines.append("versions: " + ", ".join(f"{name} {value or '-'}" for name, value in versions.items()))
    load = info.get("load_before")
    if load:
        verdict = "BUSY" if load.get("busy") else "quiet"
        others = load.get("others_cpus")
        others_text = f"other processes used {others:.2f} of {load.get('cpus')} CPUs" if others is not None else ""
        average = load.get("load_average")
        lines.append(
            f"load before the run ({verdict}): {others_text}"
            + (f"; load average {average:.2f}" if average is not None else "")
        )
    return lines
