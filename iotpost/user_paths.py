"""Paths as users type them: ``~`` expanded by us, since cmd and PowerShell do not expand it.

Usage: ``p.add_argument("--spool", type=user_path)``; ``user_path(os.environ["IOTPOST_SPOOL"])``;
on a send's cold path ``p.add_argument("--certs-dir", type=user_path_text)``

A POSIX shell expands ``~/x`` before we see it, but not ``--spool=~/x``, a quoted "~/x", a value
from the environment, or anything typed in cmd or PowerShell. ``~`` is the home folder as
``os.path.expanduser`` finds it (HOME on POSIX, USERPROFILE on Windows).

A one-off send handles its paths as ``str``, spelled as ``str(Path(...))`` spells them (so every
message names a file as before), without importing pathlib: 4 M instructions on 3.8 and 3.11, 13 M on
3.13, of a ~200 M cold send on a Raspberry Pi (bench/bench_coldsend.py).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Union


def user_path(text: str) -> Path:
    """A path flag or environment value with a leading ``~`` (or ``~user``) expanded."""
    from pathlib import Path

    return Path(os.path.expanduser(text))


def user_path_text(text: str) -> str:
    """``str(user_path(text))``, for the flags of a send's cold path."""
    return path_text(os.path.expanduser(text))


def user_path_or_stdin(text: str) -> str:
    """A path flag where ``-`` means stdin: ``-`` as it is, anything else with ``~`` expanded."""
    return text if text == "-" else os.path.expanduser(text)


def path_text(path: Union[str, Path]) -> str:
    """``str(Path(path))``: repeated and trailing separators and ``.`` parts dropped, ``""`` is ``"."``.

    POSIX keeps exactly two leading slashes (implementation-defined there), as pathlib does. Windows
    paths (drives, UNC shares, ``/`` for ``\\``) are left to pathlib itself: not a Pi's cold path.
    """
    text = os.fspath(path)
    if os.name != "posix":
        from pathlib import PurePath

        return str(PurePath(text))
    root = ""
    if text.startswith("/"):
        stripped = text.lstrip("/")
        root = "//" if len(text) - len(stripped) == 2 else "/"
        text = stripped
    return root + "/".join(part for part in text.split("/") if part and part != ".") or "."


def path_join(folder: str, name: str) -> str:
    """``str(Path(folder) / name)`` for a ``folder`` spelled by path_text and a plain file ``name``."""
    return name if folder == "." else os.path.join(folder, name)
