"""Choosing the torch device, loudly."""
from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

import torch


class DeviceUnavailableError(RuntimeError):
    """A GPU was asked for and none is visible."""


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when visible, else CPU; ``cuda`` without a GPU raises.

    Beam's stock PyTorch handler quietly falls back to CPU when CUDA is missing;
    a job that asked for a GPU should fail instead of running 50x slower.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device '{spec}' was asked for but torch sees no CUDA GPU "
            "(check the worker's accelerator and driver, or set model.device=cpu)"
        )
    return device


def describe_device(device: torch.device) -> str:
    """A short, human-readable device name for verdict rows, e.g. ``cuda:0 (NVIDIA L4)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def set_torch_threads(threads: int) -> None:
    """Intra-op threads for the calling thread's torch work (0 leaves torch's default: one per core).

    Cheap when nothing changes: workers call it before each piece of work.
    """
    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's share), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return os.cpu_count() or 1


def threads_beside_decoder(threads: int, worker_threads: int = 0) -> int:
    """Intra-op threads for work that runs while the decoder child decodes ahead.

    ``threads`` 0 (auto): every core of this worker's share (``worker_threads``;
    0: the machine) but the one the decoder uses, at least one.
    """
    if threads > 0:
        return threads
    cores = available_cores()
    share = min(worker_threads, cores) if worker_threads > 0 else cores
    return max(1, share - 1)


@contextlib.contextmanager
def intra_op_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (0: leave the setting alone), then restore them.

    What is set and restored is the calling thread's count; a thread that first
    uses torch meanwhile may start with it, so callers on worker threads re-assert
    their own count (``set_torch_threads``) before their work.

    torch's OpenMP pool busy-waits at every parallel region for all of its
    threads. When another process keeps a core busy (the decoder child decoding
    the next clip), a two-thread pool on two cores waits for a descheduled
    thread at each barrier: MTCNN measured 3-4x slower, not 2x. Fewer threads
    for that block avoid it.
    """
    before = torch.get_num_threads()
    if threads <= 0 or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA Ampere+, CPUs with AMX or AVX512-BF16)."""
    try:
        if device.type == "cuda":
            # by default torch also counts emulated bf16 (a T4, say), which is slower than fp32
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compute_cpu_clock() -> float:
    """CPU seconds to charge torch work on this thread with (difference two readings).

    With one intra-op thread torch computes on the calling thread, so that
    thread's CPU time is exact whatever other threads do. With more threads the
    process's CPU time is used: exact when nothing else in the process computes
    meanwhile (one local worker), an upper bound when several multi-threaded
    workers share the process.
    """
    return time.thread_time() if torch.get_num_threads() == 1 else time.process_time()
