"""Configuration errors that name where the bad setting came from."""

from __future__ import annotations


class ConfigError(Exception):
    """An invalid configuration: stops the start, naming file, line and parameter."""

    def __init__(
        self,
        message: str,
        filename: str | None = None,
        lineno: int | None = None,
        parameter: str | None = None,
    ) -> None:
        self.message = message
        self.filename = filename
        self.lineno = lineno
        self.parameter = parameter
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.filename:
            where = self.filename
            if self.lineno:
                where += f", line {self.lineno}"
            where += ": "
        what = f"{self.parameter}: " if self.parameter else ""
        return f"{where}{what}{self.message}"
