"""Find the configuration directory, as Postfix's commands do.

Order: the ``-c DIR`` option, else the MAIL_CONFIG environment variable,
else ``./etc`` when the current directory holds ``etc/main.cf`` (running
from a clone with pymta installed), else the ``etc/`` directory of a source
checkout when it holds a main.cf (an editable install),
else ``/etc/pymta``. Reads only the environment and the file system;
writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pymta

DEFAULT_CONFIG_DIRECTORY = "/etc/pymta"


def source_config_directory() -> Path:
    """The ``etc/`` directory next to the pymta package (a source checkout)."""
    return Path(pymta.__file__).resolve().parents[1] / "etc"


def config_directory(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The configuration directory to use (see the module docstring for the order)."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    from_env = env.get("MAIL_CONFIG")
    if from_env:
        return from_env
    here = Path.cwd() / "etc"
    if (here / "main.cf").is_file():
        return str(here)
    checkout = source_config_directory()
    if (checkout / "main.cf").is_file():
        return str(checkout)
    return DEFAULT_CONFIG_DIRECTORY
