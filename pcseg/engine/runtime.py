"""Process settings that make torch on a CPU faster: the C allocator.

A training or inference step allocates and frees tensors of tens of megabytes. glibc's malloc serves them
with fresh mmap'ed pages and hands freed memory back to the kernel at once, so every step page-faults its
whole working set again: measured on SALANet C=36, 15k points, 2 threads, a forward pass took 0.35-0.69 s
with 1.5 s of system time per 5 s run, and 0.26 s with 0.5 s of system time once the allocator keeps what it
freed (raised trim threshold and top pad, mmap only above 32 MB, glibc's ceiling for that setting).
Tensors above 32 MB still came from fresh pages: on the sparse airborne tile (85k points at 0.5 m, whose deep
levels hold 26k x 576 values, 61 MB a tensor) a 26,524 x 288 x 576 product ran at 138 GFLOP/s into a fresh
output and 205 into a kept one. So mmap is switched off altogether (M_MMAP_MAX 0): every block comes from the
heap, which keeps what it freed (the network on that tile: 2.2 -> 1.8 s, 2 threads).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

from ..errors import UsageError

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4
_done = False


def configure_allocator() -> bool:
    """Keep freed memory in the process (glibc only; elsewhere nothing happens). Returns whether it applied."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = all(mallopt(opt, value) == 1 for opt, value in ((_M_MMAP_THRESHOLD, 32 << 20), (_M_MMAP_MAX, 0),
                                                           (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 256 << 20)))
    _done = ok
    return ok


def resolve_device(spec: str) -> str:
    """``--device`` as torch understands it: ``auto`` is CUDA when a device is available, else the CPU;
    ``cpu``, ``cuda`` and ``cuda:N`` are checked against what the machine has."""
    import re

    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return spec
    m = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if m is None:
        raise UsageError(f"--device is auto, cpu, cuda or cuda:N, not {spec!r}")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {spec} asked but no CUDA device is available; use --device cpu (or auto)")
    if m.group(1) is not None and int(m.group(1)) >= torch.cuda.device_count():
        raise UsageError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return spec


def set_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads (default: torch's own choice, one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"--threads is at least 1, not {threads}")
    import torch

    torch.set_num_threads(threads)
