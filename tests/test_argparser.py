"""iotpost.argparser: argparse with whole option names only, and no terminal lookups while options are added.

Usage: python -m unittest tests.test_argparser

argparse builds a formatter on every add_argument just to check a metavar tuple against nargs, and a
formatter without a width asks the terminal for one (shutil, COLUMNS, an ioctl on stdout): per option,
on every cron start. The parser gives that check a fixed width; help and usage must still wrap at the
terminal's width, and the check itself must still refuse a bad metavar.
"""

from __future__ import annotations

import subprocess
import sys
import unittest

from iotpost.argparser import ArgumentParser
from tests.support import PROJECT_ROOT, cli_env


class MetavarCheckTest(unittest.TestCase):
    def test_a_metavar_tuple_that_does_not_match_nargs_is_still_refused(self):
        parser = ArgumentParser(prog="prog")
        with self.assertRaises(ValueError):
            parser.add_argument("--pair", nargs=2, metavar=("ONE",))
        parser.add_argument("--pair", nargs=2, metavar=("ONE", "TWO"))  # a matching one is taken
        self.assertEqual(parser.parse_args(["--pair", "a", "b"]).pair, ["a", "b"])

    def test_the_check_leaves_the_formatter_for_help_alone_afterwards(self):
        parser = ArgumentParser(prog="prog")
        parser.add_argument("--x")
        self.assertFalse(parser._checking_metavar)  # an exception in add_argument must not leave it set either
        with self.assertRaises(ValueError):
            parser.add_argument("--y", nargs=2, metavar=("A",))
        self.assertFalse(parser._checking_metavar)


class HelpWidthTest(unittest.TestCase):
    def _help_lines(self, columns: str):
        env = dict(cli_env(), COLUMNS=columns)
        proc = subprocess.run([sys.executable, str(PROJECT_ROOT / "post_https_sample.py"), "--help"],
                              capture_output=True, text=True, env=env, cwd=str(PROJECT_ROOT), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return proc.stdout.splitlines()

    def test_help_wraps_at_the_terminals_width_not_the_checks(self):
        narrow, wide = self._help_lines("60"), self._help_lines("200")
        self.assertGreater(len(narrow), len(wide))  # one fixed width would print the same lines for both
        self.assertGreater(max(map(len, wide)), 100)  # a width of 80 would have wrapped these


class ColdPathTest(unittest.TestCase):
    @unittest.skipIf(sys.version_info < (3, 9), "3.8's argparse imports shutil itself")
    def test_building_a_parser_asks_nothing_of_the_terminal(self):
        code = ("import sys; from iotpost.argparser import ArgumentParser; p = ArgumentParser(prog='p'); "
                "[p.add_argument('--o%d' % i) for i in range(20)]; print('shutil' in sys.modules)")
        proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                              env=cli_env(), cwd=str(PROJECT_ROOT), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.strip(), "False")


if __name__ == "__main__":
    unittest.main()
