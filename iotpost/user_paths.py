"""Paths as users type them: ``~`` expanded by us, since cmd and PowerShell do not expand it.

Usage: ``p.add_argument("--spool", type=user_path)``; ``user_path(os.environ["IOTPOST_SPOOL"])``

A POSIX shell expands ``~/x`` before we see it, but not ``--spool=~/x``, a quoted "~/x", a value
from the environment, or anything typed in cmd or PowerShell. ``~`` is the home folder as
``os.path.expanduser`` finds it (HOME on POSIX, USERPROFILE on Windows).
"""

from __future__ import annotations

import os
from pathlib import Path


def user_path(text: str) -> Path:
    """A path flag or environment value with a leading ``~`` (or ``~user``) expanded."""
    return Path(os.path.expanduser(text))


def user_path_or_stdin(text: str) -> str:
    """A path flag where ``-`` means stdin: ``-`` as it is, anything else with ``~`` expanded."""
    return text if text == "-" else os.path.expanduser(text)
