"""Errors the engine reports to a person: each carries a message that says what to do next,
a stable ``kind`` for the event stream, and the process exit code the CLI uses."""


class EngineError(Exception):
    """Base class: ``str(err)`` is the user-facing, actionable message."""

    kind = "error"
    exit_code = 1


class ConfigError(EngineError):
    """Bad user input: prompt, preset, step count, option values."""

    kind = "input"
    exit_code = 2


class ModelError(EngineError):
    """The guidance model is missing, corrupt, unreachable or not a diffusion model."""

    kind = "model"
    exit_code = 3


class DeviceError(EngineError):
    """The requested device is unavailable, or it ran out of memory."""

    kind = "device"
    exit_code = 4


class OutOfMemory(DeviceError):
    kind = "oom"


class ExportError(EngineError):
    """The field cannot be turned into a mesh (empty, or fills the whole sphere)."""

    kind = "export"
    exit_code = 5


class RunFolderError(EngineError):
    """A run folder to resume or re-export is missing or incomplete."""

    kind = "input"
    exit_code = 2


class DiskFull(EngineError):
    """The disk filled up; whatever was saved before stays valid."""

    kind = "disk"
    exit_code = 6


class TrainingDiverged(EngineError):
    """Many steps in a row had a non-finite loss or gradient; every one was skipped, the checkpoint is good."""

    kind = "nonfinite"
    exit_code = 7


class Cancelled(EngineError):
    """The user cancelled; the last checkpoint has been saved."""

    kind = "cancelled"
    exit_code = 130
