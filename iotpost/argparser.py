"""The argument parser every command uses: no abbreviations, and a "did you mean" for near misses.

Usage: ``parser = ArgumentParser(prog=PROG, description=...)`` (a drop-in for argparse's)

argparse accepts any unambiguous prefix of a long option, so a curl user's ``--retry 5`` becomes
``--retry-backoff 5`` once ``--retries`` is spelled differently: a silent, wrong run. Here only
whole option names are accepted, and an unknown option close to a real one is answered with
``prog: error: unrecognized argument --retry: did you mean --retries?`` (exit 2, after usage).
"""

from __future__ import annotations

import argparse
import re

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import List, Optional, Sequence

from .console import write_safely


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser with allow_abbrev=False and suggestions for unknown options."""

    _checking_metavar = False  # inside add_argument, whose formatter only checks a metavar against nargs

    def __init__(self, *args, **kwargs) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        self._checking_metavar = True
        try:
            return super().add_argument(*args, **kwargs)
        finally:
            self._checking_metavar = False

    def _get_formatter(self):
        # argparse builds a formatter on every add_argument, only to check a metavar tuple against nargs,
        # and a formatter without a width asks the terminal for one: shutil imported (with bz2, lzma and
        # fnmatch), COLUMNS and LINES looked up, an ioctl on stdout, each failure an exception, per option.
        # That check needs no width; help and usage text still get the terminal's.
        if self._checking_metavar:
            return self.formatter_class(prog=self.prog, width=80)
        return super()._get_formatter()

    def option_names(self) -> List[str]:
        """Every option string this parser accepts (for suggestions and the hint audit test)."""
        return sorted(name for action in self._actions for name in action.option_strings)

    def suggest(self, unknown: str) -> Optional[str]:
        """The known option closest to ``unknown`` (``--retry`` -> ``--retries``), or None."""
        import difflib  # only on a mistyped option: not a cost every run pays

        name = unknown.split("=", 1)[0]
        longs = [n for n in self.option_names() if n.startswith("--")]
        close = difflib.get_close_matches(name, longs, n=1, cutoff=0.75)
        if not close:  # "--dry" for "--dry-run": a prefix argparse would have guessed
            prefixed = [n for n in longs if n.startswith(name)] if len(name) > 3 else []
            close = prefixed if len(prefixed) == 1 else []
        return close[0] if close else None

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        # Every command answers --version, also one whose module does not add it itself.
        if "--version" not in self._option_string_actions:
            from . import __version__

            self.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None):  # type: ignore[override]
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            for extra in extras:
                if extra.startswith("--"):
                    hint = self.suggest(extra)
                    if hint:
                        self.error("unrecognized argument %s: did you mean %s?" % (extra.split("=", 1)[0], hint))
            self.error("unrecognized arguments: %s" % " ".join(_shown(extra) for extra in extras))
        return ns

    def _print_message(self, message: str, file=None) -> None:  # help/usage/errors on any console
        import sys

        if message:
            write_safely(file or sys.stderr, message)


def _shown(arg: str) -> str:
    """An unknown argument as it may be echoed: never a value that could hold a password.

    ``--https-proxy=http://user:secret@host`` is shown as ``--https-proxy=...``, and a stray URL
    with credentials loses them, as the Redactor cannot know a secret the parser never accepted.
    """
    if arg.startswith("--") and "=" in arg:
        return arg.split("=", 1)[0] + "=..."
    return re.sub(r"//[^/@\s]*@", "//...@", arg)
