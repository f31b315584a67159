"""The one wrapper every entry point runs in: signals, errors and exit codes in one place.

Usage: ``sys.exit(run(main_body, argv, prog="post_https_sample.py"))``

Known errors (IotPostError) become ``prog: error: message`` plus a ``prog: hint:`` line and their
exit code; SIGINT/SIGTERM (Windows: SIGBREAK) become 130/143; anything else is a bug: exit 1 with a one-line message,
and the traceback only with --debug.
"""

from __future__ import annotations

import _signal as signal  # signal.py is this plus IntEnums made at import: 5 M instructions per start on 3.8
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, List, Optional

from .errors import Interrupted, IotPostError
from .exitcodes import ExitStatus
from .output import Redactor, write_line


def _raise_interrupted(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """SIGINT, SIGTERM and Windows' Ctrl+Break (SIGBREAK) raise Interrupted, so blocking sleeps and
    sockets return at once.

    Windows delivers no SIGTERM from another process (TerminateProcess kills without running any
    handler); Ctrl+Break in the console is how to stop a run there with the summary printed.
    """
    signal.signal(signal.SIGINT, _raise_interrupted)
    for name in ("SIGTERM", "SIGBREAK"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_interrupted)


def _stderr_writer(redact: Redactor, timestamps: bool) -> Callable[[str], None]:
    """The last lines of a run go out like every other line: redacted, stamped with --timestamps."""

    def say(line: str) -> None:
        if timestamps:
            import time

            from .output import local_iso

            line = "%s %s" % (local_iso(time.time()), line)
        write_line(sys.stderr, redact(line) + "\n")  # a closed stderr must not turn 75 into a traceback

    return say


def _json_error_writer(redact: Redactor) -> Callable[[int, str], None]:
    """One ``{"schema": 1, "event": "error", "exit_code": N, "message": ...}`` line on stdout, so a --json
    caller that reads only stdout sees why a one-request command failed (the senders say it in their summary)."""

    def emit(code: int, message: str) -> None:
        import json

        from .output import JSON_SCHEMA

        record = {"schema": JSON_SCHEMA, "event": "error", "exit_code": code, "message": redact(message)}
        write_line(sys.stdout, json.dumps(record, ensure_ascii=True) + "\n")

    return emit


def run(body: Callable[[List[str], List[str]], int], argv: Optional[List[str]], prog: str,
        json_errors: bool = False) -> int:
    """Call body(args, secrets) and turn whatever happens into an exit code and a few stderr lines.

    The body appends every secret it loads to ``secrets`` so even an unexpected error message
    that quotes one is redacted here. ``json_errors``: with ``--json`` among the arguments, a failure
    also prints one error record on stdout (register, heartbeat, readings).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    secrets: List[str] = []
    say = _stderr_writer(Redactor(secrets), timestamps="--timestamps" in args)
    emit = _json_error_writer(Redactor(secrets)) if json_errors and "--json" in args else None

    def failed(code: int, message: str) -> int:
        if emit is not None:
            emit(code, message)
        return code

    install_signal_handlers()
    try:
        return int(body(args, secrets))
    except Interrupted as exc:
        say("%s: %s" % (prog, exc.message))
        return failed(int(exc.exit_code), exc.message)
    except KeyboardInterrupt:
        say("%s: interrupted by SIGINT" % prog)
        return failed(int(ExitStatus.SIGINT), "interrupted by SIGINT")
    except IotPostError as exc:
        say("%s: error: %s" % (prog, exc.message))
        if exc.hint:
            say("%s: hint: %s" % (prog, exc.hint))
        if debug:
            import traceback

            write_line(sys.stderr, Redactor(secrets)(traceback.format_exc()))
        return failed(int(exc.exit_code), exc.message)
    except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return failed(code, "invalid arguments (the usage error is on stderr)") if code else code
    except Exception as exc:  # a bug: say so in one line, the traceback only on request
        redact = Redactor(secrets)
        if debug:
            import traceback

            write_line(sys.stderr, redact(traceback.format_exc()))
        say("%s: error: internal error: %s: %s" % (prog, exc.__class__.__name__, exc))
        if not debug:
            say("%s: hint: run again with --debug for the traceback, and report it" % prog)
        return failed(int(ExitStatus.INTERNAL), "internal error: %s: %s" % (exc.__class__.__name__, exc))
