"""``python -m pymta.sendmail``: the sendmail command."""

import sys

from pymta.sendmail.command import main

sys.exit(main(["sendmail", *sys.argv[1:]]))
