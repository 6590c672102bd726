"""Clocks and memory meters for bench_sds.py: laps between the parts of a step (CUDA synchronised),
peak memory per phase (CUDA max_memory_allocated or CPU VmHWM), bytes autograd saves for backward."""
from __future__ import annotations

import contextlib
import ctypes
import resource
import time

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Mem:
    """Peak memory per phase: CUDA max_memory_allocated, or CPU RSS high-water mark (VmHWM)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._clear_ok = True
        self.trim = None  # set by tight_malloc(): glibc's malloc_trim, called before each measured phase

    @staticmethod
    def _status(key: str) -> float:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
        return float("nan")

    def current(self) -> float:
        if self.cuda:
            return torch.cuda.memory_allocated(self.device) / 2**20
        try:
            return self._status("VmRSS")
        except OSError:
            return float("nan")

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if self.trim is not None:
            self.trim(0)  # free heap chunks would be reused without raising RSS: release them first
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            self._clear_ok = False

    def peak(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            if self._clear_ok:
                return self._status("VmHWM")
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def tight_malloc(mem: Mem | None = None) -> bool:
    """Make freed CPU tensors leave RSS at once (glibc): fixed 64 KiB mmap threshold, trim the heap,
    and have ``mem`` trim again before each measured phase. Without it glibc keeps freed memory
    resident and reuses it, so RSS deltas undercount what a phase allocates."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
        libc.malloc_trim(0)
        if mem is not None:
            mem.trim = libc.malloc_trim
        return True
    except (OSError, AttributeError):
        return False


class Clock:
    """Laps between parts of a step; synchronises CUDA before reading the time. Optionally records
    the memory peak of each lap (``mem``), relative to the memory at the start of the step."""

    def __init__(self, device: torch.device, mem: Mem | None = None):
        self.device, self.mem = device, mem
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def start(self) -> None:
        sync(self.device)
        if self.mem is not None:
            self.base = self.mem.current()
            self.mem.reset_peak()
        self.t0 = self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        sync(self.device)
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.t
        if self.mem is not None:
            self.peaks[name] = self.mem.peak() - self.base
            self.peaks[name + "_end"] = self.mem.current() - self.base
            self.mem.reset_peak()
        self.t = time.perf_counter()

    def total(self) -> float:
        return self.t - self.t0


@contextlib.contextmanager
def count_saved(store: dict, key: str, exclude_ptrs: set[int]):
    """Bytes autograd saves for backward inside the block (storages counted once, parameters excluded)."""
    seen = store.setdefault("_seen", set())

    def pack(t):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in seen and ptr not in exclude_ptrs:
                seen.add(ptr)
                store[key] = store.get(key, 0) + st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield
