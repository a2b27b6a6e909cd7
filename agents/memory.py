"""Memory on a device, and the check that refuses an allocation before it is attempted.

A replay buffer is the one allocation a run makes that scales with a setting (``agent.buffer_size``),
so it is sized against what the device has before the run starts (``run.py``) and again when the
agent builds it, with a margin left for the rest of the run.
"""

from __future__ import annotations

import os

import torch


def _memory(device: torch.device | str, field: str) -> int | None:
    """``field`` "available" or "total" bytes on ``device``: the GPU's (torch.cuda.mem_get_info), else
    /proc/meminfo's MemAvailable / MemTotal, else ``os.sysconf``'s pages; None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0 if field == "available" else 1])
    key, pages = ("MemAvailable:", "SC_AVPHYS_PAGES") if field == "available" else ("MemTotal:", "SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes that can still be allocated on ``device``; None if unknown."""
    return _memory(device, "available")


def total_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes of memory on ``device`` in all; None if unknown."""
    return _memory(device, "total")


def safety_margin(device: torch.device | str = "cpu") -> int:
    """Memory a buffer must leave free: 512 MiB, or 10% of the device where that is less. The run
    needs memory beyond the buffer (networks, the batch and its gradients, the env, the allocator's
    slack, other processes), and a buffer that takes the last of it does not fail cleanly: on Linux
    the OOM killer ends the run (or a neighbour) with no error to catch, and on a GPU the first
    update fails instead of the allocation. 10% keeps small machines usable."""
    total = total_memory(device)
    return min(512 * 2**20, total // 10) if total is not None else 512 * 2**20


def check_fits(nbytes: int, device: torch.device | str, what: str) -> None:
    """Refuse an allocation that cannot fit, with :func:`safety_margin` to spare, before it is
    attempted (and before a run starts)."""
    available = available_memory(device)
    if available is None:
        return
    margin = safety_margin(device)
    if nbytes > available:
        raise MemoryError(f"{what} needs {nbytes / 2**30:,.2f} GiB ({nbytes:,} bytes) on {torch.device(device)}, "
                          f"but only {available / 2**30:,.2f} GiB is available; lower agent.buffer_size")
    if available - nbytes < margin:
        raise MemoryError(f"{what} needs {nbytes / 2**30:,.2f} GiB ({nbytes:,} bytes) on {torch.device(device)}, "
                          f"which would leave {(available - nbytes) / 2**20:,.0f} MiB of the "
                          f"{available / 2**30:,.2f} GiB available, less than the {margin / 2**20:,.0f} MiB the "
                          "rest of the run needs; lower agent.buffer_size")
