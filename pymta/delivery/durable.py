"""Map the OS errors of the agents that write files to delivery statuses
(they sync through the group-commit barrier, :mod:`pymta.sync`).

Mirrors the parts of Postfix's mail_copy()/sys_exits that decide between
"try again later" and "give up": a full disk is an operating condition
(defer), never a bounce. Writes nothing itself.
"""

from __future__ import annotations

import errno


def os_error_status(error: OSError, what: str) -> tuple[str, str]:
    """(status, reason) for a failed mailbox write; always a deferral.

    EDQUOT/EFBIG -> 4.2.2 (mailbox full), ENOSPC -> 4.3.0 (system storage),
    anything else -> 4.2.0 with the system's error text.
    """
    code = error.errno
    text = error.strerror or str(error)
    if code in (errno.EDQUOT, errno.EFBIG):
        return "4.2.2", f"cannot update {what}: mailbox full ({text})"
    if code == errno.ENOSPC:
        return "4.3.0", f"cannot update {what}: insufficient system storage ({text})"
    return "4.2.0", f"cannot update {what}: {text}"
