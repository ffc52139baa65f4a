"""pymta.smtpd: the SMTP server (Postfix's smtpd).

``SMTPServerFactory(config, cleanup, resolver, open_table, tls, clock,
service_name="smtpd")`` is the entry point; see its module,
:mod:`pymta.smtpd.settings` (what every session of a listener shares),
:mod:`pymta.smtpd.protocol` (the session's commands),
:mod:`pymta.smtpd.chat` (its replies), :mod:`pymta.smtpd.datareader` (its
message content), :mod:`pymta.smtpd.restrictions`
(access control), :mod:`pymta.smtpd.relay` (where a recipient really goes)
and :mod:`pymta.smtpd.resolver` (what smtpd asks of trivial-rewrite).
"""

from pymta.smtpd.factory import SMTPServerFactory
from pymta.smtpd.protocol import SMTPServerProtocol
from pymta.smtpd.resolver import SmtpdResolver
from pymta.smtpd.restrictions import Reject, Restrictions

__all__ = ["Reject", "Restrictions", "SMTPServerFactory", "SMTPServerProtocol", "SmtpdResolver"]
