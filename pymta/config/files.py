"""Read an administrator's configuration file (main.cf, master.cf) as text.

The files are UTF-8, as Postfix 3.x expects of main.cf with
``smtputf8_enable``. A file that cannot be read, or is not UTF-8, is a
ConfigError naming the file (and for bad bytes the line that holds the
first of them), never an OSError or UnicodeDecodeError. Writes nothing.
"""

from __future__ import annotations

import os

from pymta.config.errors import ConfigError


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The text of path; ConfigError naming the file (and line) when it
    cannot be read or is not UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", str(path)) from None
    return decode_config_text(data, str(path))


def decode_config_text(data: bytes, filename: str) -> str:
    """data as UTF-8; ConfigError naming filename and the line of the first
    byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(
            f"not UTF-8: byte {data[e.start : e.start + 1]!r} at offset {e.start}: "
            "save the file as UTF-8",
            filename,
            lineno,
        ) from None
