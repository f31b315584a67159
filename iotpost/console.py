"""Writing text to a console that may not be able to encode it (a Thai cp874 or an ascii terminal).

Usage: ``write_safely(sys.stdout, "temperature_unit: °C\\n")``

A character the stream cannot encode is written as a backslash escape (``\\xb0``) instead of
ending the run with ``UnicodeEncodeError``: output must never be the thing that fails a send.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO


def write_safely(stream: IO[str], text: str) -> None:
    """``stream.write(text)``, escaping what the stream's encoding cannot hold."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))


def protect_std_streams() -> None:
    """Make sys.stdout/sys.stderr escape what they cannot encode (covers every writer, argparse too)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is None:  # replaced by a test or an embedding program: theirs to choose
            continue
        try:
            reconfigure(errors="backslashreplace")
        except (ValueError, OSError):  # detached or closed: nothing to write to anyway
            pass


def lf_line_endings(stream: IO[str]) -> None:
    r"""Write "\n" as it is: Windows' sys.stdout turns it into "\r\n", which JSON Lines readers need not expect."""
    reconfigure = getattr(stream, "reconfigure", None)
    if reconfigure is None:  # not a TextIOWrapper: it writes what it is given
        return
    try:
        reconfigure(newline="\n")
    except (ValueError, OSError):  # detached or closed: nothing to write to anyway
        pass
