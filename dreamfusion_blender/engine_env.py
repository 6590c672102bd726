"""The engine's own Python environment: create it, fill it, check it.

No bpy here. The add-on never installs torch into Blender's Python; instead "Set up engine" makes a
virtual environment in the add-on's user folder (``python -m venv`` with Blender's interpreter), installs
the torch build chosen for this machine (torch_choice.py), then ``pip install -r engine/requirements.txt``,
then runs ``python -m engine check`` and reports whether the GPU is usable — all in a background thread
with progress, so Blender stays responsive during a multi-gigabyte download. Failures say which step
failed and show pip's error.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import engine_cli


@dataclass
class SetupStatus:
    running: bool = False
    step: int = 0
    steps: int = 0
    step_name: str = ""
    last_line: str = ""
    ok: bool | None = None  # None while running / never run
    message: str = ""
    log: list = field(default_factory=list)
    check: dict | None = None  # the engine's check report from the last step

    @property
    def fraction(self) -> float:
        return (self.step - 1 + 0.5) / self.steps if self.running and self.steps else (1.0 if self.ok else 0.0)


def setup_commands(venv_dir: Path, requirements: Path, base_python: str | None = None,
                   pip_args: tuple = (), torch_plan=None, check: bool = True) -> list[tuple[str, list[str]]]:
    """The steps of "Set up engine". ``torch_plan`` (torch_choice.TorchPlan) installs the chosen torch
    build first, so the requirements' unpinned torch is already satisfied by it."""
    base = base_python or sys.executable
    py = str(engine_cli.venv_python(venv_dir))
    pip = [py, "-m", "pip", "install", "--disable-pip-version-check"]
    steps = [("create the environment", [base, "-m", "venv", str(venv_dir)])]
    if torch_plan is not None:
        steps.append((f"install {torch_plan.summary}, about {torch_plan.download_gb:.1f} GB",
                      [*pip, *torch_plan.pip_args, *pip_args]))
    steps.append(("install the engine's requirements", [*pip, "-r", str(requirements), *pip_args]))
    if check:
        steps.append(("check the engine", engine_cli.check_argv(py)))
    return steps


class EngineSetup:
    """Runs the setup commands one after another in a thread; ``status`` is read by the UI."""

    def __init__(self, venv_dir: Path, requirements: Path | None = None, base_python: str | None = None,
                 pip_args: tuple = (), env: dict | None = None, torch_plan=None, check: bool = True):
        self.commands = setup_commands(Path(venv_dir), requirements or engine_cli.requirements_file(),
                                       base_python, pip_args, torch_plan, check)
        self.torch_plan = torch_plan
        # The check step needs the engine importable; venv and pip do not mind PYTHONPATH.
        self.env = engine_cli.worker_env(env)
        self.status = SetupStatus(steps=len(self.commands))
        self._thread: threading.Thread | None = None

    def start(self) -> "EngineSetup":
        self.status.running, self.status.ok = True, None
        self._thread = threading.Thread(target=self._run, name="dreamfusion-setup", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> SetupStatus:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def _run(self) -> None:
        st = self.status
        try:
            for i, (name, argv) in enumerate(self.commands, start=1):
                st.step, st.step_name, st.last_line = i, name, ""
                rc = self._run_one(argv)
                if rc != 0:
                    errors = [ln for ln in st.log if "error" in ln.lower()] or st.log
                    detail = " | ".join(errors[-3:])
                    st.ok = False
                    st.message = f"step {i}/{st.steps} failed ({name}; exit code {rc}): {detail}"
                    return
            st.ok, st.message = True, ready_message(st.check, self.torch_plan)
        except OSError as exc:
            st.ok = False
            st.message = f"step {st.step}/{st.steps} could not start ({st.step_name}): {exc}"
        finally:
            st.running = False

    def _run_one(self, argv: list[str]) -> int:
        st = self.status
        st.log.append("$ " + " ".join(argv))
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=self.env)
        for line in proc.stdout:
            line = line.rstrip()
            if line.startswith('{"event": "check"'):
                try:
                    st.check = json.loads(line)
                except json.JSONDecodeError:
                    pass
            if line:
                st.last_line = line
                st.log.append(line)
                del st.log[:-200]  # keep the tail; pip can print thousands of lines
        return proc.wait()


def ready_message(check: dict | None, torch_plan=None) -> str:
    """The set-up's last line: ready, and whether the GPU the chosen build is for is usable."""
    if check is None:
        return "the engine environment is ready"
    msg = "the engine environment is ready: " + check_summary(check)
    if torch_plan is not None and torch_plan.kind == "cuda" and not check.get("cuda_available"):
        msg += (" - WARNING: a CUDA build was installed but torch cannot use the GPU; update the NVIDIA "
                "driver and press 'Check engine'")
    elif not check.get("cuda_available") and str(check.get("device", "cpu")).startswith("cpu"):
        msg += " - WARNING: no GPU in use, generation will be slow"
    return msg


def check_summary(check: dict | None) -> str:
    """The engine's ``check`` event -> one line for the preferences."""
    if not check:
        return "no report"
    parts = [f"engine {check.get('engine_version', '?')}", f"torch {check.get('torch', '?')}"]
    if check.get("cuda_available"):
        gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in check.get("gpus", []))
        parts.append(f"CUDA {check.get('cuda_build')}: {gpus}")
    else:
        parts.append("no CUDA GPU" + (" (CPU-only torch build)" if not check.get("cuda_build") else ""))
    if "device" in check:
        parts.append(f"device {check['device']}")
    if check.get("device_error"):
        parts.append(f"device error: {check['device_error']}")
    model = check.get("model")
    if model:
        parts.append(f"model {model.get('name')}: " + ("ok" if model.get("ok") else f"NOT OK - {model.get('error')}"))
    return "; ".join(parts)
