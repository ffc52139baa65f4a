"""``pymta sendmail``: the sendmail command under the pymta command.

The command itself is :mod:`pymta.sendmail.command` (also installed as the
``pymta-sendmail`` console script); ``python -m pymta.cli.sendmail`` runs
it too. Writes and logs what that command does.
"""

from __future__ import annotations

import sys

from pymta.sendmail.command import main, run

__all__ = ["main", "run"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
