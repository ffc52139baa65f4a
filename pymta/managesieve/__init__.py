"""managesieve: the ManageSieve server (RFC 5804), Pigeonhole's managesieve.

A master.cf listener (``sieve inet n - n - - managesieved``, port 4190)
through which mail clients (Thunderbird's Sieve add-on, Roundcube,
sievelib) upload and activate the Sieve scripts :mod:`pymta.sieve` runs.
Modules: :mod:`~pymta.managesieve.protocol` (the session),
:mod:`~pymta.managesieve.scripts` (the script files),
:mod:`~pymta.managesieve.factory` (wiring).
"""
