"""End a session's connection, over TLS too (imapd, pop3d).

imapd and pop3d register themselves as streaming producers on their
transport (they stop reading commands while the client does not read the
answers). Twisted's TLS layer (``TLSMemoryBIOProtocol``, under STARTTLS,
STLS and the implicit-TLS ports alike) postpones the TLS close while a
producer is registered: ``loseConnection`` with the producer still there
sends the last answer and then nothing — no close_notify, no FIN — and a
client that waits for the end (mbsync after ``LOGOUT``, ``openssl
s_client``) waits forever. Plain TCP closes either way, which hid it.

:func:`hang_up` does what ends a session: unregister the producer, let
reading resume when the session had paused it (the TLS layer must read the
client's close_notify to finish its close), and lose the connection after
what is buffered. Dovecot and Postfix close at once after BYE / QUIT;
here the client gets the answer, the close_notify and the FIN. A client
that neither reads the rest nor answers the close_notify is cut off
(``abortConnection``) after :data:`CLOSE_TIMEOUT` seconds, so no ended
session holds a connection for longer than that.

Untrusted input: none. Writes: the transport. Logs: nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

#: Seconds an ended session's connection may take to drain its last answer
#: and finish the TLS close before it is aborted.
CLOSE_TIMEOUT = 30.0


def hang_up(
    transport: Any,
    clock: IReactorTime,
    *,
    reading_paused: bool = False,
    timeout: float = CLOSE_TIMEOUT,
) -> IDelayedCall:
    """Unregister transport's producer and close it after what is buffered.

    ``reading_paused``: the session had paused the transport's reading.
    Returns the timer that aborts the connection if it still stands after
    ``timeout`` seconds; cancel it when the connection is lost.
    """
    transport.unregisterProducer()
    if reading_paused:
        transport.resumeProducing()
    transport.loseConnection()

    def abort() -> None:
        abort_connection = getattr(transport, "abortConnection", None)
        if abort_connection is not None:
            abort_connection()

    return clock.callLater(timeout, abort)
