"""Errors of the pure core."""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A configuration file is invalid. ``str()`` is ``file:line: problem``."""

    def __init__(self, path: Path | str | None, line: int | None, message: str) -> None:
        self.path = Path(path) if path is not None else None
        self.line = line
        self.message = message
        where = str(self.path) if self.path is not None else "<config>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}")
