"""pymta.cleanup: Postfix's cleanup(8) (see docs/architecture.md).

- :class:`Cleanup` (``pymta.cleanup.cleanup``): ICleanup over a queue store.
- ``pymta.cleanup.headers``: header scan, Received/Message-ID/Date/From.
- ``pymta.cleanup.addresses``: canonical maps and virtual alias expansion.
"""

from pymta.cleanup.cleanup import Cleanup
from pymta.cleanup.interface import CleanupRejected, ICleanup

__all__ = ["Cleanup", "CleanupRejected", "ICleanup"]
