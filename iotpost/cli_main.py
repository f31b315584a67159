"""``python3 -m iotpost COMMAND``: one entry point, a git-style table of subcommands.

Usage: ``python3 -m iotpost send --certs-dir DIR`` (or ``python3 iotpost.py send ...`` in a clone)

Each command lives in its own module, imported only when it runs, so ``iotpost send`` starts no
slower than ``post_https_sample.py``. A command's ``main(argv, prog)`` returns the exit code.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Dict, List, Optional

from . import __version__
from .exitcodes import ExitStatus
from .records import Record

PROG = "iotpost"


class Command(Record):
    module: str  # under iotpost., with a main(argv, prog) -> int
    summary: str


COMMANDS: Dict[str, Command] = {
    "send": Command("tesaiot_cli", "send telemetry (TESAIoT, IoTFlow, Connectivity); as post_https_sample.py"),
    "tlink": Command("tlink_cli", "push TLINK payloads to a webhook, signed; as tlink_push.py"),
    "register": Command("register_cli", "register a device on IoTFlow or Connectivity and write its bundle"),
    "heartbeat": Command("heartbeat_cli", "tell the platform the device is online"),
    "readings": Command("readings_cli", "read stored readings back (IoTFlow, Connectivity, ThermaCore)"),
    "doctor": Command("doctor_cli", "check bundle, DNS, TCP, proxy, TLS, clock and key, one line each"),
    "spool": Command("spool_cli", "the spool: status, dead-letters, drop ID, requeue ID, flush"),
    "smoke": Command("smoke_cli", "CI check: health, credentials, send, read back, compare; JSON and JUnit verdict"),
    "receiver": Command("receiver.cli", "run the local twin of the platforms; as receiver.py"),
}


SENDERS = ("send", "tlink", "spool")  # one-off runs a cron job starts: their start-up is kept lean


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: %s COMMAND [options]   (%s COMMAND --help for its options)" % (PROG, PROG), "", "commands:"]
    lines += ["  %s  %s" % (name.ljust(width), cmd.summary) for name, cmd in COMMANDS.items()]
    lines += ["", "exit codes: 0 ok, 2 usage, 65 bad data or rejected payload, 66 credential file missing, 75 "
              "temporary failure (retry later), 77 credentials rejected, 78 configuration or TLS, 130/143 "
              "interrupted. See README.md."]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    from .console import protect_std_streams, write_safely

    protect_std_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        if len(args) >= 2 and args[0] == "help":
            return _run(args[1], ["--help"]) if args[1] in COMMANDS else main([args[1]])  # unknown: 2, with did-you-mean
        write_safely(sys.stdout if args else sys.stderr, usage())
        return int(ExitStatus.OK if args else ExitStatus.USAGE)
    if args[0] == "--version":
        write_safely(sys.stdout, "%s %s\n" % (PROG, __version__))
        return int(ExitStatus.OK)
    name = args[0]
    if name in SENDERS:
        from .startup import pause_gc

        pause_gc()  # until the run itself begins (delivery.Sender.run): start-up makes little garbage
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        shown = name if len(name) <= 40 and "//" not in name else name[:20] + "..."
        write_safely(sys.stderr, "%s: error: unknown command %r%s\n%s: hint: %s --help lists the commands\n"
                     % (PROG, shown, "; did you mean %s?" % close[0] if close else "", PROG, PROG))
        return int(ExitStatus.USAGE)
    return _run(name, args[1:])


def _run(name: str, argv: List[str]) -> int:
    module = __import__("iotpost." + COMMANDS[name].module, fromlist=["main"])
    return int(module.main(argv, prog="%s %s" % (PROG, name)))
