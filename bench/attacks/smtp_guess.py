#!/usr/bin/env python3
"""smtp_guess - guess a password over SMTP AUTH on submission, with swaks.

SYNOPSIS
    python bench/attacks/smtp_guess.py [--guesses 12] [--auth-limit 8]
        [--failure-delay 250ms] [--max-delay 4s]

DESCRIPTION
    On loopback only: starts pymta (tests/harness.py, twistd -n) with a
    submission service as etc/master.cf ships it (STARTTLS required,
    smtpd_sasl_auth_enable = yes, permit_sasl_authenticated, reject), a
    certificate signed by a throw-away CA (tests/tls_ca.py), the given
    pymta_auth_failure_delay and pymta_auth_failure_max_delay,
    smtpd_client_auth_rate_limit = --auth-limit (per anvil_rate_time_unit,
    60s) and smtpd_client_event_limit_exceptions empty (the attacker is on
    loopback, which the default $mynetworks would exempt).

    The attacker is swaks, as a brute-forcer runs it: one process per
    guess, STARTTLS verified against the CA (--tls-verify --tls-ca-path),
    AUTH PLAIN with the next password, --quit-after AUTH. It makes
    --guesses wrong guesses in a row and then tries the right password,
    noting each guess's reply code and how long swaks took (TLS and
    Perl's start-up included, so the first figure is the floor).

    Prints one line: the case, HELD or NOT HELD, and the figures: the
    seconds each guess took with its reply code (535: checked and wrong,
    450: refused by the rate limit without a check, 235: logged in), the
    AUTH attempt the limit first refused, and whether the right password
    got in. HELD: the 535 replies came slower and slower (the last wrong
    guess waited at least --failure-delay longer than the first), the
    rate limit refused every AUTH past --auth-limit with Postfix's
    450 4.7.1, and the right password, tried past the limit, did not get
    in.

    The server is stopped and its temporary directory removed at the end,
    also on error or ^C.

EXAMPLE
    python bench/attacks/smtp_guess.py --guesses 10 --auth-limit 6
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.harness import DEFAULT_MASTER_CF, PymtaServer  # noqa: E402
from tests.tls_ca import make_ca  # noqa: E402

USER = "bob@example.test"
PASSWORD = "bob-pw"

#: The submission service, a second spelling of 127.0.0.1 (the certificate's
#: address) so that the harness tells its port from the smtp one.
SUBMISSION = "[127.0.0.1]:0"

#: swaks prints the server's lines after "<~ " once TLS is on ("<~* " for
#: an error reply).
_REPLY = re.compile(r"^<~\*? +(\d{3})[ -](.*)$")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Guess a password over SMTP AUTH with swaks.")
    p.add_argument("--guesses", type=int, default=12, help="wrong passwords before the right one")
    p.add_argument("--auth-limit", type=int, default=8, help="smtpd_client_auth_rate_limit")
    p.add_argument("--failure-delay", default="250ms")
    p.add_argument("--max-delay", default="4s")
    return p.parse_args(argv)


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0}
    for suffix in ("ms", "s", "m"):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def guess(port: int, ca_file: Path, password: str) -> tuple[str, str, float]:
    """One swaks run: the AUTH reply's code and text, and the seconds it took."""
    command = [
        "swaks",
        "--server",
        f"127.0.0.1:{port}",
        "--tls",
        "--tls-verify",
        "--tls-ca-path",
        str(ca_file),
        "--auth",
        "PLAIN",
        "--auth-user",
        USER,
        "--auth-password",
        password,
        "--quit-after",
        "AUTH",
    ]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    took = time.monotonic() - started
    if "TLS started" not in result.stdout:
        raise RuntimeError(f"swaks did not start TLS:\n{result.stdout}{result.stderr}")
    # The last reply before QUIT's 221 is AUTH's.
    replies = [m for line in result.stdout.splitlines() if (m := _REPLY.match(line))]
    answers = [m for m in replies if m.group(1) != "221"]
    code, text = answers[-1].group(1), answers[-1].group(2)
    return code, text, took


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("swaks") is None:
        print("smtp_guess swaks: SKIPPED swaks is not installed (tools/install-test-deps)")
        return 1
    failure_delay = seconds(args.failure_delay)
    with tempfile.TemporaryDirectory(prefix="smtp_guess.") as tmp:
        certs = make_ca(Path(tmp) / "ca")
        master = DEFAULT_MASTER_CF + (
            f"{SUBMISSION} inet n - n - - smtpd\n"
            "  -o syslog_name=pymta/submission\n"
            "  -o smtpd_tls_security_level=encrypt\n"
            "  -o smtpd_sasl_auth_enable=yes\n"
            "  -o smtpd_client_restrictions=permit_sasl_authenticated,reject\n"
            "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        )
        server = PymtaServer(
            Path(tmp) / "server",
            main_cf_extra=(
                "smtpd_tls_security_level = may\n"
                f"smtpd_tls_cert_file = {certs.cert_file}\n"
                f"smtpd_tls_key_file = {certs.key_file}\n"
                f"pymta_auth_failure_delay = {args.failure_delay}\n"
                f"pymta_auth_failure_max_delay = {args.max_delay}\n"
                f"smtpd_client_auth_rate_limit = {args.auth_limit}\n"
                "smtpd_client_event_limit_exceptions =\n"
            ),
            master_cf=master,
        )
        results: list[tuple[str, str, float]] = []
        with server:
            server.start()
            port = server.ports[SUBMISSION]
            for n in range(args.guesses):
                results.append(guess(port, certs.ca_file, f"guess-{n:04d}"))
            results.append(guess(port, certs.ca_file, PASSWORD))
            limited = server.log().count("AUTH command rate limit exceeded")
            server.stop()
    wrong = [took for code, _text, took in results[:-1] if code == "535"]
    refused_from = next(
        (n + 1 for n, (code, _text, _took) in enumerate(results) if code == "450"), None
    )
    refusals_right = all(
        code == "450" and text.startswith("4.7.1 Error: too many AUTH commands")
        for code, text, _took in results[args.auth_limit :]
    )
    grew = len(wrong) >= 2 and wrong[-1] - wrong[0] >= failure_delay
    found = results[-1][0] == "235"
    held = (
        grew
        and refusals_right
        and refused_from == args.auth_limit + 1
        and len(wrong) == min(args.auth_limit, args.guesses)
        and not found
    )
    figures = " ".join(f"{took:.2f}s/{code}" for code, _text, took in results)
    print(
        f"smtp_guess swaks x{args.guesses}+1 (auth limit {args.auth_limit}/60s, delay "
        f"{args.failure_delay}..{args.max_delay}): {'HELD' if held else 'NOT HELD'} "
        f"guesses {figures}; rate limit from AUTH #{refused_from or 'never'} "
        f"({limited} warnings logged), right password got in: {'yes' if found else 'no'}"
    )
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
