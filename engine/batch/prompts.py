"""The batch's input: a UTF-8 text file, one prompt per line; each distinct prompt becomes one job.

Every problem with the file is reported before any work starts, with the line it is on. A job's id
(slug + hash of the prompt) names its .glb and run folder, and is what the manifest remembers, so a
re-run of an edited file still recognises the prompts it has already made.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..runfolder import slugify

HELP = "UTF-8 text file, one prompt per line; blank lines and lines starting with # are skipped"


@dataclass(frozen=True)
class Job:
    id: str
    prompt: str
    line: int  # 1-based line in the prompts file, for messages


def job_id(prompt: str) -> str:
    digest = hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:8]
    return f"{slugify(prompt, max_len=32)}-{digest}"


def read_jobs(path: str | Path) -> tuple[list[Job], list[str]]:
    """Jobs in file order, and warnings (duplicate prompts, which would give the same asset twice)."""
    path = Path(path).expanduser()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"the prompts file {path} does not exist; give a text file with one prompt per line") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder; give a text file with one prompt per line") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the prompts file {path}: {exc.strerror}") from None
    jobs: list[Job] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path} line {number} is not UTF-8 text (byte 0x{line_bytes[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8"
            ) from None
        prompt = line.strip().lstrip("\ufeff").strip()  # a BOM on the first line is not part of the prompt
        if not prompt or prompt.startswith("#"):
            continue
        if prompt in seen:
            warnings.append(f"line {number} repeats the prompt of line {seen[prompt]} and is skipped")
            continue
        seen[prompt] = number
        jobs.append(Job(job_id(prompt), prompt, number))
    if not jobs:
        raise ConfigError(f"the prompts file {path} has no prompts ({HELP})")
    return jobs, warnings
