"""``twistd pymta``: command-line options and makeService.

Mirrors ``postfix start``: read main.cf and master.cf from the configuration
directory (``--config``, else $MAIL_CONFIG, else the sample in ``etc/``) and
start every service master.cf names. Privileges are dropped by twistd's own
``-u``/``-g`` after the listening ports are bound.
"""

from __future__ import annotations

from twisted.application.service import IService
from twisted.python import usage

from pymta.config.locate import config_directory


class Options(usage.Options):
    """Options of ``twistd pymta``."""

    optParameters = [
        [
            "config",
            "c",
            None,
            "Configuration directory holding main.cf and master.cf "
            "(default: $MAIL_CONFIG, else the sample configuration in etc/).",
        ],
    ]

    def postOptions(self) -> None:
        self["config"] = config_directory(self["config"])


def makeService(options: Options) -> IService:
    """Build the whole pymta service hierarchy from the configuration."""
    from pymta.service import makeService as make

    return make(options["config"])
