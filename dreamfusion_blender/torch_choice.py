"""Which torch build "Set up engine" installs, and the pip command lines for it.

No bpy here. Plain ``pip install torch`` gives a CPU-only build on Windows (and a multi-GB CUDA build on
Linux even without a GPU), so the choice is made from the machine:
- NVIDIA GPU (``nvidia-smi`` works) on Windows or Linux: a CUDA build from PyTorch's own wheel index,
  the newest CUDA that the driver supports (``nvidia-smi`` prints the highest CUDA version the driver
  can run; a build for a newer CUDA would not load);
- Apple silicon: the default PyPI build, which carries MPS;
- otherwise: the CPU build, with a warning that generation will be slow.
``plan()`` is pure (platform, machine and nvidia-smi's output in, a TorchPlan out) so every case is
unit-tested; ``detect()`` gathers those inputs on this machine.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

INDEX = "https://download.pytorch.org/whl/"
# PyTorch's CUDA wheel indexes for current torch releases (pytorch.org "Get started"), oldest first.
# Update with each torch release.
CUDA_BUILDS = ((11, 8), (12, 6), (12, 8), (13, 0))


@dataclass(frozen=True)
class TorchPlan:
    kind: str  # cuda | mps | cpu
    pip_args: tuple  # after `pip install`
    summary: str  # what will be installed, for the preferences
    download_gb: float  # rough download size of torch and the engine's requirements
    warning: str = ""
    gpu: str = ""

    @property
    def index_url(self) -> str | None:
        return self.pip_args[self.pip_args.index("--index-url") + 1] if "--index-url" in self.pip_args else None


def parse_nvidia_smi(text: str) -> tuple[str, tuple[int, int] | None]:
    """nvidia-smi's table -> (first GPU's name, the driver's CUDA version)."""
    m = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", text or "")
    cuda = (int(m.group(1)), int(m.group(2))) if m else None
    name = ""
    for line in (text or "").splitlines():
        g = re.match(r"\|\s*\d+\s+(.+?)\s{2,}(On|Off|WDDM|TCC)\s*\|", line)
        if g:
            name = re.sub(r"\s+\.\.\.$", "", g.group(1).strip())
            break
    return name, cuda


def cuda_build_for(driver_cuda: tuple[int, int]) -> tuple[int, int] | None:
    """The newest PyTorch CUDA build the driver can run (CUDA minor-version compatibility within a major
    is not relied on: the build's version must not exceed the driver's)."""
    fitting = [b for b in CUDA_BUILDS if b <= tuple(driver_cuda)]
    return fitting[-1] if fitting else None


def plan(system: str, machine: str, nvidia_smi: str | None) -> TorchPlan:
    """system: sys.platform ('win32', 'linux', 'darwin'); machine: platform.machine(); nvidia_smi: its
    output, or None when it is missing or fails."""
    machine = machine.lower()
    if system == "darwin":
        if machine in ("arm64", "aarch64"):
            return TorchPlan("mps", ("torch",), "torch (default build, Apple GPU via MPS)", 0.4)
        return TorchPlan("cpu", ("torch",), "torch (CPU; Intel Macs have no supported GPU build)", 0.4,
                         warning="no supported GPU: generation runs on the CPU and takes hours with Stable Diffusion")
    if nvidia_smi is not None and system in ("win32", "linux"):
        gpu, driver = parse_nvidia_smi(nvidia_smi)
        build = cuda_build_for(driver) if driver else None
        if build is not None:
            tag = f"cu{build[0]}{build[1]}"
            size = 2.6 if system == "win32" else 3.5  # Linux wheels pull the CUDA libraries as separate packages
            return TorchPlan("cuda", ("torch", "--index-url", INDEX + tag),
                             f"torch with CUDA {build[0]}.{build[1]} ({INDEX}{tag}) for {gpu or 'the NVIDIA GPU'} "
                             f"(driver supports CUDA {driver[0]}.{driver[1]})", size, gpu=gpu)
        why = (f"the driver supports CUDA {driver[0]}.{driver[1]}, older than any current PyTorch build "
               f"(needs {CUDA_BUILDS[0][0]}.{CUDA_BUILDS[0][1]}+): update the NVIDIA driver, then set up again"
               if driver else "nvidia-smi did not report a CUDA version")
        return TorchPlan("cpu", ("torch", "--index-url", INDEX + "cpu"), "torch (CPU build)", 0.3,
                         warning=f"NVIDIA GPU found but {why}; generation would run on the CPU (hours)", gpu=gpu)
    return TorchPlan("cpu", ("torch", "--index-url", INDEX + "cpu"), "torch (CPU build)", 0.3,
                     warning="no NVIDIA GPU found (nvidia-smi): generation runs on the CPU and takes hours with "
                             "Stable Diffusion; builtin:shapes still works")


def run_nvidia_smi(timeout: float = 10.0) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def detect() -> TorchPlan:
    return plan(sys.platform, platform.machine(), run_nvidia_smi())
