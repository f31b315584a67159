"""``iotpost spool ACTION``: the spool's maintenance, as words instead of the senders' --spool-* flags.

Usage: ``iotpost spool status --spool PATH`` · ``dead-letters`` · ``drop ID`` · ``requeue ID`` · ``flush``

Each action is the ``iotpost send`` flag it names (``--spool-status``, ``--dead-letters``,
``--spool-drop ID``, ``--spool-requeue ID``, ``--flush-spool``), so both spellings behave alike,
share one exit-code table and accept the same --spool/--json/--certs-dir flags. TLINK's spooled
pushes are flushed by ``iotpost tlink --flush-spool`` (the webhook URL and secret are its own).
"""

from __future__ import annotations

import sys
from typing import List, Optional

from .exitcodes import ExitStatus

PROG = "iotpost spool"
ACTIONS = {"status": ("--spool-status", 0), "dead-letters": ("--dead-letters", 0), "drop": ("--spool-drop", 1),
           "requeue": ("--spool-requeue", 1), "flush": ("--flush-spool", 0)}


def usage(prog: str) -> str:
    return ("usage: %s {status,dead-letters,drop ID,requeue ID,flush} --spool PATH [options]\n"
            "  status        counts, the oldest payload, failing payloads and dead letters\n"
            "  dead-letters  the payloads the platform rejected, as JSON Lines\n"
            "  drop ID       delete a pending payload (ids from status)\n"
            "  requeue ID    put a dead letter back in the queue\n"
            "  flush         send what is spooled, generate nothing (takes iotpost send's flags)\n"
            "The spool may also come from $IOTPOST_SPOOL. Exit codes as iotpost send.\n" % prog)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    from .console import protect_std_streams, write_safely

    protect_std_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        write_safely(sys.stdout if args else sys.stderr, usage(prog))
        return int(ExitStatus.OK if args else ExitStatus.USAGE)
    if args[0] == "--version":
        from . import __version__

        write_safely(sys.stdout, "%s (iotpost %s)\n" % (prog, __version__))
        return int(ExitStatus.OK)
    action = args[0]
    if action not in ACTIONS:
        write_safely(sys.stderr, "%s: error: unknown action %r (choose from %s)\n"
                     % (prog, action[:40], ", ".join(ACTIONS)))
        return int(ExitStatus.USAGE)
    flag, takes_id = ACTIONS[action]
    rest = args[1:]
    if takes_id:
        if not rest or rest[0].startswith("-"):
            write_safely(sys.stderr, "%s: error: %s needs the payload's id (see `%s status`)\n"
                         % (prog, action, prog))
            return int(ExitStatus.USAGE)
        translated = [flag, rest[0]] + rest[1:]
    else:
        translated = [flag] + rest
    from .tesaiot_cli import main as send_main

    return send_main(translated, prog="%s %s" % (prog, action))
