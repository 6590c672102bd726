"""The engine's own Python environment: create it, fill it, check it.

No bpy here. The add-on never installs torch into Blender's Python; instead "Set up engine" makes a
virtual environment in the add-on's user folder (``python -m venv`` with Blender's interpreter, then
``pip install -r engine/requirements.txt``), in a background thread with progress, so Blender stays
responsive during a multi-gigabyte download. Failures say which step failed and show pip's error.
"""

from __future__ import annotations

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

    @property
    def fraction(self) -> float:
        return (self.step - 1 + 0.5) / self.steps if self.running and self.steps else (1.0 if self.ok else 0.0)


def setup_commands(venv_dir: Path, requirements: Path, base_python: str | None = None,
                   pip_args: tuple = ()) -> list[tuple[str, list[str]]]:
    base = base_python or sys.executable
    py = str(engine_cli.venv_python(venv_dir))
    return [
        ("create the environment", [base, "-m", "venv", str(venv_dir)]),
        ("install the engine's requirements (torch is large: this can take many minutes)",
         [py, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(requirements), *pip_args]),
    ]


class EngineSetup:
    """Runs the setup commands one after another in a thread; ``status`` is read by the UI."""

    def __init__(self, venv_dir: Path, requirements: Path | None = None, base_python: str | None = None,
                 pip_args: tuple = (), env: dict | None = None):
        self.commands = setup_commands(Path(venv_dir), requirements or engine_cli.requirements_file(),
                                       base_python, pip_args)
        self.env = env
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
            st.ok, st.message = True, "the engine environment is ready"
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
            if line:
                st.last_line = line
                st.log.append(line)
                del st.log[:-200]  # keep the tail; pip can print thousands of lines
        return proc.wait()


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
