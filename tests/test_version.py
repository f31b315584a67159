"""--version on every command: the iotpost entry point, each command in its table, the seed scripts, the twin."""

from __future__ import annotations

import importlib.util
import unittest

from iotpost import __version__
from iotpost.cli_main import COMMANDS
from tests.support import PROJECT_ROOT, RECEIVER, SENDER, TLINK, run_cli

ENTRY = PROJECT_ROOT / "iotpost.py"


class VersionTests(unittest.TestCase):
    def test_every_command_in_the_table_answers_version(self):
        present = [name for name, cmd in COMMANDS.items()
                   if importlib.util.find_spec("iotpost." + cmd.module) is not None]
        self.assertIn("doctor", present)
        self.assertIn("receiver", present)
        for name in present:
            with self.subTest(command=name):
                proc = run_cli(ENTRY, name, "--version")
                self.assertEqual((proc.returncode, proc.stderr), (0, ""))
                self.assertEqual(proc.stdout, "iotpost %s (iotpost %s)\n" % (name, __version__))

    def test_entry_point_and_scripts(self):
        self.assertEqual(run_cli(ENTRY, "--version").stdout, "iotpost %s\n" % __version__)
        for script in (SENDER, TLINK, RECEIVER):
            with self.subTest(script=script.name):
                proc = run_cli(script, "--version")
                self.assertEqual(proc.returncode, 0)
                self.assertEqual(proc.stdout, "%s (iotpost %s)\n" % (script.name, __version__))

    def test_a_parser_that_adds_version_itself_keeps_its_own(self):
        from iotpost.argparser import ArgumentParser

        import contextlib
        import io

        parser = ArgumentParser(prog="x")
        parser.add_argument("--version", action="version", version="x custom")
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertRaises(SystemExit) as cm:
            parser.parse_args(["--version"])
        self.assertEqual((cm.exception.code, out.getvalue()), (0, "x custom\n"))


if __name__ == "__main__":
    unittest.main()
