"""``pymta sendmail``: the sendmail command under the pymta command.

The command itself is :mod:`pymta.sendmail.command` (also installed as the
``pymta-sendmail`` console script); ``python -m pymta.cli.sendmail`` runs
it too. ``pymta install-sendmail`` writes the fast launcher
(:mod:`pymta.sendmail.launcher`). Writes and logs what those commands do.
"""

from __future__ import annotations

import sys

from pymta.sendmail.command import main, run
from pymta.sendmail.launcher import run as run_install

__all__ = ["main", "run", "run_install"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
