"""Configuration: main.cf and master.cf, in Postfix's syntax and meaning.

The names below are imported when first used (PEP 562), so that a command
that needs only :mod:`pymta.config.config` (sendmail, one process per
message) does not pay for master.cf and validation at start-up.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing costs sendmail's start-up time;
# mypy treats any name TYPE_CHECKING as true.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from pymta.config.config import Config, split_list
    from pymta.config.defaults import DEFAULTS, Param
    from pymta.config.errors import ConfigError
    from pymta.config.locate import config_directory
    from pymta.config.master_cf import MasterService, check_master, load_master, parse_master_cf
    from pymta.config.validate import validate

_WHERE = {
    "Config": "pymta.config.config",
    "split_list": "pymta.config.config",
    "DEFAULTS": "pymta.config.defaults",
    "Param": "pymta.config.defaults",
    "ConfigError": "pymta.config.errors",
    "config_directory": "pymta.config.locate",
    "MasterService": "pymta.config.master_cf",
    "check_master": "pymta.config.master_cf",
    "load_master": "pymta.config.master_cf",
    "parse_master_cf": "pymta.config.master_cf",
    "validate": "pymta.config.validate",
}

__all__ = [
    "DEFAULTS",
    "Config",
    "ConfigError",
    "MasterService",
    "Param",
    "check_master",
    "config_directory",
    "load_master",
    "parse_master_cf",
    "split_list",
    "validate",
]


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pymta.config' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
