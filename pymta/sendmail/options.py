"""sendmail's command line: Postfix's sendmail(1) options, parsed.

Mirrors Postfix's sendmail.c option handling. Options may be bundled
(``-ti``), an option's argument may be attached (``-fuser``) or the next
word (``-f user``), ``--`` ends the options and the words after the options
are the recipients. What each option does:

- ``-bm`` (default) read a message; ``-bs`` SMTP on stdin/stdout; ``-bp``
  list the queue (mailq); ``-bi`` / ``-I`` rebuild aliases (newaliases);
  ``-bv`` and ``-bd``/``-bh``/``-bH`` are refused with a clear error;
- ``-t`` recipients from To/Cc/Bcc (added to those on the command line,
  as in Postfix 2.1 and later); ``-i`` / ``-oi`` a lone ``.`` does not end
  the message; ``-f`` / ``-r`` the envelope sender; ``-F`` the full name;
- ``-N`` DSN notify (``never`` or ``success,failure,delay``), ``-R``
  DSN return (``full``/``hdrs``), ``-V`` DSN envelope id, ``-B`` body type;
- ``-C`` configuration file or directory, ``-L`` the name in messages,
  ``-v`` verbose, ``-q`` flush the queue (``-qR``/``-qS`` refused);
- accepted and ignored, as in Postfix: ``-G`` (pymta's cleanup rewrites no
  header addresses, so gateway mode changes nothing), ``-oe?`` ``-om``
  ``-o7`` ``-o8`` ``-od?`` and other ``-o``, ``-O``, ``-e``, ``-h``,
  ``-A``, ``-X``, ``-p``, ``-c``, ``-m``, ``-n``, ``-U``, ``-x``.

Anything else is a UsageError. Untrusted input: the command line (of any
local user). Writes and logs nothing.
"""

from __future__ import annotations

#: Options that take an argument (attached or as the next word).
_WITH_ARGUMENT = set("ABCFLNORVXbefhopr")
#: Options without an argument.
_FLAGS = set("GIUcimntvx")

MODES = {"m": "deliver", "s": "smtp", "p": "mailq", "i": "newaliases", "v": "verify"}
_REFUSED_MODES = {
    "d": "daemon mode is 'twistd pymta'",
    "D": "daemon mode is 'twistd -n pymta'",
    "h": "host status is not kept by pymta",
    "H": "host status is not kept by pymta",
}
_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")


class UsageError(ValueError):
    """A bad command line; str() is the message after ``fatal:``."""


class Options:
    """What the command line asks for (a plain class: dataclasses would
    cost sendmail's start-up time)."""

    def __init__(self) -> None:
        self.mode = "deliver"  # deliver | smtp | mailq | newaliases | verify | flush
        self.recipients: list[str] = []
        self.extract = False  # -t
        self.ignore_dots = False  # -i, -oi
        self.sender: str | None = None  # -f, -r
        self.full_name = ""  # -F
        self.config: str | None = None  # -C (a directory, or a file in it)
        self.notify = ""  # -N, canonical form
        self.ret = ""  # -R
        self.envid = ""  # -V
        self.body = ""  # -B
        self.label = ""  # -L
        self.verbose = 0  # -v
        self.gateway = False  # -G


def _notify(value: str) -> str:
    words = [w.strip().upper() for w in value.split(",") if w.strip()]
    if words == ["NEVER"]:
        return "NEVER"
    # Postfix also accepts "delay,failure" in any order and ignores case.
    if not words or any(w not in _NOTIFY for w in words):
        raise UsageError(f"bad -N option value: {value!r} (never, or success,failure,delay)")
    return ",".join(k for k in _NOTIFY if k in words)


def _apply(opts: Options, letter: str, value: str) -> None:
    if letter == "b":
        if value[:1] in MODES and len(value) == 1:
            opts.mode = MODES[value]
        elif value[:1] in _REFUSED_MODES:
            raise UsageError(f"-b{value}: {_REFUSED_MODES[value[:1]]}")
        else:
            raise UsageError(f"unsupported -b option: -b{value}")
    elif letter in "fr":
        opts.sender = value.strip()
        if opts.sender.startswith("<") and opts.sender.endswith(">"):
            opts.sender = opts.sender[1:-1]
    elif letter == "F":
        opts.full_name = value
    elif letter == "C":
        opts.config = value
    elif letter == "N":
        opts.notify = _notify(value)
    elif letter == "R":
        if value.upper() not in ("FULL", "HDRS"):
            raise UsageError(f"bad -R option value: {value!r} (full or hdrs)")
        opts.ret = value.upper()
    elif letter == "V":
        if not value or len(value) > 100 or not value.isprintable() or not value.isascii():
            raise UsageError("bad -V option value: 1 to 100 printable ASCII characters")
        opts.envid = value
    elif letter == "B":
        if value.upper() not in ("7BIT", "8BITMIME"):
            raise UsageError(f"bad -B option value: {value!r} (7BIT or 8BITMIME)")
        opts.body = value.upper()
    elif letter == "L":
        opts.label = value
    elif letter == "o":
        if value == "i":
            opts.ignore_dots = True
        # every other -o (-oem, -oee, -om, -o7, -odb, -oAfile, ...) is
        # accepted and ignored, as Postfix's sendmail does.
    # -O, -e, -h, -A, -X, -p: accepted and ignored (Postfix).


def parse(argv: list[str]) -> Options:
    """Options from the arguments after the program name; UsageError when bad."""
    opts = Options()
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            letter = word[j]
            if letter == "q":
                rest = word[j + 1 :]
                if rest[:1] in ("R", "S"):
                    raise UsageError(f"-q{rest[:1]}: per-site flush is not supported; use -q")
                opts.mode = "flush"  # -q or -q<interval>: Postfix ignores the interval
                break
            if letter in _WITH_ARGUMENT:
                value = word[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise UsageError(f"option requires an argument -- '{letter}'")
                    value = argv[i]
                _apply(opts, letter, value)
                break
            if letter not in _FLAGS:
                raise UsageError(f"invalid option -- '{letter}'")
            if letter == "t":
                opts.extract = True
            elif letter == "i":
                opts.ignore_dots = True
            elif letter == "I":
                opts.mode = "newaliases"
            elif letter == "v":
                opts.verbose += 1
            elif letter == "G":
                opts.gateway = True
            j += 1
        i += 1
    opts.recipients = list(argv[i:])
    return opts
