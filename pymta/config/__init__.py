"""Configuration: main.cf and master.cf, in Postfix's syntax and meaning."""

from pymta.config.config import Config, split_list
from pymta.config.defaults import DEFAULTS, Param
from pymta.config.errors import ConfigError

__all__ = ["DEFAULTS", "Config", "ConfigError", "Param", "split_list"]
