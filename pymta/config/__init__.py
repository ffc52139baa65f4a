"""Configuration: main.cf and master.cf, in Postfix's syntax and meaning."""

from pymta.config.config import Config, split_list
from pymta.config.defaults import DEFAULTS, Param
from pymta.config.errors import ConfigError
from pymta.config.locate import config_directory
from pymta.config.master_cf import MasterService, check_master, load_master, parse_master_cf
from pymta.config.validate import validate

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
