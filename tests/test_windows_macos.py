"""Windows and macOS behaviour, simulated where the standard library allows (issue 15).

None of this runs on a real Windows or macOS here: a Windows closed pipe is a stream raising
OSError(EINVAL), the platform is ``os.name``/``sys.platform`` patched, and the Windows process
probe is injected (its ctypes calls cannot run on Linux).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sys
import unittest
from pathlib import Path
from unittest import mock

from iotpost import tesaiot_cli
from iotpost.cli_run import run
from iotpost.environment import Environment
from iotpost.errors import TransientError
from tests.support import clear_proxy_env
from tests.test_e2e_sender import DEVICE, SenderTestCase


class WindowsClosedPipe(io.StringIO):
    """A pipe whose reader went away, as Windows reports it: OSError(EINVAL), not BrokenPipeError."""

    def __init__(self, after: int = 0) -> None:
        super().__init__()
        self.after = after  # writes that succeed before the reader goes away

    def write(self, text: str) -> int:
        if self.after <= 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        self.after -= 1
        return super().write(text)

    def flush(self) -> None:
        if self.after <= 0:
            raise OSError(errno.EINVAL, "Invalid argument")


class ClosedPipeOnWindows(SenderTestCase):
    def setUp(self) -> None:
        super().setUp()
        clear_proxy_env(self)

    def send_in_process(self, stdout, stderr, *argv: str) -> int:
        env = Environment(stdin=io.StringIO(""), stdout=stdout, stderr=stderr, sleep=lambda s: None)
        return tesaiot_cli._main(list(argv), [], env=env)

    def test_a_stdout_closed_after_the_first_line_stores_every_payload_and_exits_0(self):
        twin = self.twin()
        stdout, stderr = WindowsClosedPipe(after=1), io.StringIO()
        code = self.send_in_process(stdout, stderr, "--certs-dir", str(self.bundle(twin)),
                                    "--count", "3", "--interval", "0")
        self.assertEqual(code, 0, stderr.getvalue())
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)
        self.assertTrue(stdout.getvalue().startswith("#1 "), stdout.getvalue())

    def test_json_lines_into_a_closed_pipe_from_the_start_still_deliver_everything(self):
        twin = self.twin()
        code = self.send_in_process(WindowsClosedPipe(), WindowsClosedPipe(), "--certs-dir", str(self.bundle(twin)),
                                    "--count", "3", "--interval", "0", "--json", "--verbose")
        self.assertEqual(code, 0)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)

    def test_the_final_error_lines_survive_a_closed_stderr(self):
        def body(args, secrets):
            raise TransientError("the platform is down", hint="try later")

        with contextlib.redirect_stderr(WindowsClosedPipe()):
            self.addCleanup(signal.signal, signal.SIGINT, signal.default_int_handler)
            if hasattr(signal, "SIGTERM"):
                self.addCleanup(signal.signal, signal.SIGTERM, signal.SIG_DFL)
            code = run(body, [], "prog.py")
        self.assertEqual(code, 75)

    def test_other_os_errors_are_not_taken_for_a_closed_pipe(self):
        from iotpost.output import write_line

        class Full(io.StringIO):
            def write(self, text):
                raise OSError(errno.ENOSPC, "No space left on device")

        with self.assertRaises(OSError):
            write_line(Full(), "x\n")


class FakeKernel32:
    """The three kernel32 calls the spool's Windows probe makes, answering as told."""

    def __init__(self, handle: int = 0x1F4, exit_code: int = 259, query_ok: bool = True) -> None:
        self.handle, self.exit_code, self.query_ok = handle, exit_code, query_ok
        self.opened: list = []
        self.closed: list = []

    def OpenProcess(self, access, inherit, pid):  # noqa: N802 - the Windows API's name
        self.opened.append((access, inherit, pid))
        return self.handle

    def GetExitCodeProcess(self, handle, code_ref):  # noqa: N802
        code_ref._obj.value = self.exit_code
        return self.query_ok

    def CloseHandle(self, handle):  # noqa: N802
        self.closed.append(handle)
        return True


class ProcessLivenessOnWindows(unittest.TestCase):
    """The decision logic of the Windows probe; the ctypes calls themselves cannot run here."""

    def probe(self, kernel32, last_error=lambda: 0):
        from iotpost.spool import _windows_process_alive

        return _windows_process_alive(4242, kernel32=kernel32, last_error=last_error)

    def test_a_running_process_is_alive_and_its_handle_closed(self):
        k = FakeKernel32(exit_code=259)
        self.assertTrue(self.probe(k))
        self.assertEqual(k.opened, [(0x1000, False, 4242)])  # PROCESS_QUERY_LIMITED_INFORMATION
        self.assertEqual(k.closed, [0x1F4])

    def test_an_exited_process_whose_pid_is_still_held_is_dead(self):
        k = FakeKernel32(exit_code=1)
        self.assertFalse(self.probe(k))
        self.assertEqual(k.closed, [0x1F4])

    def test_no_such_process_is_dead(self):
        self.assertFalse(self.probe(FakeKernel32(handle=0), last_error=lambda: 87))  # ERROR_INVALID_PARAMETER

    def test_access_denied_means_alive(self):
        self.assertTrue(self.probe(FakeKernel32(handle=0), last_error=lambda: 5))  # ERROR_ACCESS_DENIED

    def test_an_unanswered_exit_code_query_counts_as_alive(self):
        k = FakeKernel32(query_ok=False)
        self.assertTrue(self.probe(k))
        self.assertEqual(k.closed, [0x1F4])

    def test_process_alive_asks_the_windows_probe_and_never_os_kill_on_windows(self):
        from iotpost import spool

        asked = []
        with mock.patch.object(spool.os, "name", "nt"), \
                mock.patch.object(spool, "_windows_process_alive", lambda pid: asked.append(pid) or False), \
                mock.patch.object(spool.os, "kill", side_effect=AssertionError("os.kill terminates on Windows")):
            self.assertFalse(spool._process_alive(4242))
        self.assertEqual(asked, [4242])

    def test_a_killed_runs_claim_is_taken_back_at_once_on_windows(self):
        import socket
        import tempfile
        from pathlib import Path

        from iotpost import spool

        folder = Path(tempfile.mkdtemp(prefix="iotpost-win-"))
        self.addCleanup(__import__("shutil").rmtree, str(folder), True)
        path = folder / "spool.sqlite3"
        crashed = spool.SqliteSpool(path)
        self.addCleanup(crashed.close)
        crashed.owner = "%s:%d:dead" % (socket.gethostname(), 4242)
        crashed.put("tesaiot", b"{}", "key-1", 100.0)
        self.assertEqual(crashed.claim("tesaiot", 100.0).key, "key-1")  # lease 600 s: far from expired
        nxt = spool.SqliteSpool(path)
        self.addCleanup(nxt.close)
        with mock.patch.object(spool.os, "name", "nt"), \
                mock.patch.object(spool, "_windows_process_alive", lambda pid: pid != 4242):
            taken = nxt.claim("tesaiot", 101.0)
        self.assertIsNotNone(taken, "the killed run's claim was kept until its lease ran out")
        self.assertEqual(taken.key, "key-1")


class FullFsyncOnMacOS(unittest.TestCase):
    """The spool's connection itself, read back through SQLite (which takes the pragma on Linux too)."""

    def fullfsync(self, platform: str) -> int:
        import tempfile
        from pathlib import Path

        from iotpost import spool

        folder = Path(tempfile.mkdtemp(prefix="iotpost-mac-"))
        self.addCleanup(__import__("shutil").rmtree, str(folder), True)
        with mock.patch.object(sys, "platform", platform):
            opened = spool.SqliteSpool(folder / "spool.sqlite3")
        self.addCleanup(opened.close)
        (value,) = opened._db.execute("PRAGMA fullfsync").fetchone()
        return value

    def test_on_macos_the_spool_turns_fullfsync_on(self):
        self.assertEqual(self.fullfsync("darwin"), 1)

    def test_elsewhere_it_stays_off(self):
        self.assertEqual(self.fullfsync("linux"), 0)


class TildeInPaths(SenderTestCase):
    """cmd and PowerShell pass ``~`` through unexpanded; so does a quoted or --flag=~ value in any shell."""

    def setUp(self) -> None:
        super().setUp()
        clear_proxy_env(self)
        self.home = self.tmp / "home"
        self.home.mkdir()
        patcher = mock.patch.dict(os.environ, {"HOME": str(self.home), "USERPROFILE": str(self.home)})
        patcher.start()
        self.addCleanup(patcher.stop)

    def test_every_tesaiot_path_flag_expands_the_home_folder(self):
        s = tesaiot_cli.settings_from_args([
            "--certs-dir", "~/bundle", "--ca-file", "~/ca.pem", "--data-file", "~/data.jsonl",
            "--spool=~/spool.sqlite3", "--client-cert", "~/c.pem", "--client-key", "~/k.pem",
            "--client-key-password-file", "~/pw.txt"])
        self.assertEqual(s.certs_dir, str(self.home / "bundle"))  # str on the cold path: no pathlib import
        self.assertEqual(s.ca_file, str(self.home / "ca.pem"))
        self.assertEqual(Path(s.data_file), self.home / "data.jsonl")
        self.assertEqual(s.common.spool, self.home / "spool.sqlite3")
        self.assertEqual(s.tls.client_cert, str(self.home / "c.pem"))
        self.assertEqual(s.tls.client_key, str(self.home / "k.pem"))
        self.assertEqual(s.tls.client_key_password_file, str(self.home / "pw.txt"))

    def test_every_receiver_path_flag_expands_the_home_folder(self):
        from iotpost.receiver import cli as receiver_cli

        ns = receiver_cli.build_parser().parse_args([
            "--cert", "~/c.pem", "--key", "~/k.pem", "--client-ca", "~/ca.pem", "--bundle", "~/b",
            "--db", "~/twin.sqlite3", "--tlink-secret-file", "~/s.txt"])
        s = receiver_cli.settings_from_args(ns, environ={})
        self.assertEqual((s.certfile, s.keyfile, s.client_ca, s.bundles, s.tlink_secret_file),
                         (self.home / "c.pem", self.home / "k.pem", self.home / "ca.pem", (self.home / "b",),
                          self.home / "s.txt"))
        self.assertEqual(Path(s.db_path), self.home / "twin.sqlite3")
        memory = receiver_cli.settings_from_args(receiver_cli.build_parser().parse_args(["--db", ":memory:"]),
                                                 environ={"TLINK_WEBHOOK_SECRET_FILE": "~/env-secret.txt"})
        self.assertEqual((memory.db_path, memory.tlink_secret_file), (":memory:", self.home / "env-secret.txt"))

    def test_every_tlink_path_flag_expands_the_home_folder_and_dash_stays_stdin(self):
        from iotpost import tlink_cli

        s = tlink_cli.settings_from_args(["--ca-file", "~/ca.pem", "--secret-file", "~/secret.txt",
                                          "--replay", "~/pushes.jsonl"], environ={})
        self.assertEqual(s.ca_file, str(self.home / "ca.pem"))
        self.assertEqual(s.secret_file, str(self.home / "secret.txt"))
        self.assertEqual(Path(s.replay), self.home / "pushes.jsonl")
        s = tlink_cli.settings_from_args(["--data-file", "~/r.jsonl"], environ={})
        self.assertEqual(Path(s.data_file), self.home / "r.jsonl")
        self.assertEqual(tlink_cli.settings_from_args(["--data-file", "-"], environ={}).data_file, "-")
        self.assertEqual(tesaiot_cli.settings_from_args(["--data-file", "-"]).data_file, "-")

    def test_path_environment_variables_expand_the_home_folder(self):
        from iotpost import tlink_cli
        from iotpost.bundle import default_certs_dir

        environ = {"TESAIOT_CERTS_DIR": "~/bundle", "IOTPOST_SPOOL": "~/spool.sqlite3"}
        self.assertEqual(default_certs_dir(Path("/opt/iotpost"), environ), str(self.home / "bundle"))
        s = tlink_cli.settings_from_args([], environ=environ)
        self.assertEqual(s.common.spool, self.home / "spool.sqlite3")
        self.assertEqual(s.ca_file, str(self.home / "bundle" / "ca-chain.pem"))

    def test_a_send_with_tilde_paths_delivers(self):
        twin = self.twin()
        self.bundle(twin, name="home/bundle")
        (self.home / "data.jsonl").write_text('{"t": 1}\n{"t": 2}\n', encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdin=io.StringIO(""), stdout=out, stderr=err)
        code = tesaiot_cli._main(["--certs-dir", "~/bundle", "--data-file", "~/data.jsonl",
                                  "--spool", "~/spool.sqlite3"], [], env=env)
        self.assertEqual(code, 0, err.getvalue())
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)
        self.assertTrue((self.home / "spool.sqlite3").exists())
        self.assertFalse(Path("~").exists())


class PowerShellEncodings(SenderTestCase):
    """Windows PowerShell 5.1's ``>`` writes UTF-16 with a BOM; Notepad may add a UTF-8 BOM."""

    LINES = '{"temperature": 21.5, "unit": "\u00b0C"}\r\n{"temperature": 22.0, "unit": "\u00b0C"}\r\n'

    def setUp(self) -> None:
        super().setUp()
        clear_proxy_env(self)

    def send_in_process(self, *argv: str, stdin=None):
        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
        return tesaiot_cli._main(list(argv), [], env=env), err.getvalue()

    def stored_units(self, twin):
        return sorted(row.data["unit"] for row in twin.store.all_telemetry(DEVICE))

    def test_data_files_in_utf16_le_be_and_utf8_with_or_without_bom_all_deliver(self):
        for encoding, bom in (("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"),
                              ("utf-8", b"\xef\xbb\xbf"), ("utf-8", b"")):
            with self.subTest(encoding=encoding, bom=bom):
                twin = self.twin()
                path = self.tmp / ("data-%s-%d.jsonl" % (encoding, len(bom)))
                path.write_bytes(bom + self.LINES.encode(encoding))
                code, err = self.send_in_process("--certs-dir", str(self.bundle(twin)), "--data-file", str(path))
                self.assertEqual(code, 0, err)
                self.assertEqual(self.stored_units(twin), ["\u00b0C", "\u00b0C"])

    def test_a_file_in_another_encoding_is_named_as_not_utf8_or_utf16(self):
        from iotpost.data_input import load_data_file
        from iotpost.errors import InputDataError

        path = self.tmp / "cp874.jsonl"
        path.write_bytes('{"unit": "\u00b0C", "t": 1}\n'.encode("latin-1"))
        with self.assertRaises(InputDataError) as caught:
            load_data_file(str(path))
        self.assertIn("is not UTF-8 or UTF-16 text", caught.exception.message)
        self.assertEqual(caught.exception.exit_code, 65)

    def test_a_utf16_stream_on_stdin_is_read_line_by_line(self):
        twin = self.twin()
        raw = io.BufferedReader(io.BytesIO(b"\xff\xfe" + self.LINES.encode("utf-16-le")))
        stdin = io.TextIOWrapper(raw, encoding="utf-8")
        code, err = self.send_in_process("--certs-dir", str(self.bundle(twin)), "--data-file", "-", stdin=stdin)
        self.assertEqual(code, 0, err)
        self.assertEqual(self.stored_units(twin), ["\u00b0C", "\u00b0C"])

    def test_tlink_readings_and_replays_in_utf16_are_read(self):
        from iotpost.data_input import read_lines
        from iotpost.tlink import load_replay

        pushes = load_replay(b"\xff\xfe" + '{"deviceId": 1, "unit": "\u00b0C"}\r\n'.encode("utf-16-le"), "r.jsonl")
        self.assertEqual(pushes, ['{"deviceId": 1, "unit": "\u00b0C"}'.encode("utf-8")])
        stream = io.BufferedReader(io.BytesIO(b"\xfe\xff" + '{"a": 1}\n\n{"b": 2}\n'.encode("utf-16-be")))
        got = list(read_lines(stream, "<stdin>", lambda line, where, no: (no, line.strip())))
        self.assertEqual(got, [(1, '{"a": 1}'), (3, '{"b": 2}')])

    def test_json_lines_end_in_lf_even_where_the_console_translates_to_crlf(self):
        twin = self.twin()
        raw = io.BytesIO()
        windows_stdout = io.TextIOWrapper(raw, encoding="utf-8", newline="\r\n")  # as sys.stdout on Windows
        env = Environment(stdin=io.StringIO(""), stdout=windows_stdout, stderr=io.StringIO())
        code = tesaiot_cli._main(["--certs-dir", str(self.bundle(twin)), "--json", "--count", "2",
                                  "--interval", "0"], [], env=env)
        windows_stdout.flush()
        self.assertEqual(code, 0)
        written = raw.getvalue()
        self.assertNotIn(b"\r", written)
        self.assertEqual(len(written.splitlines()), 3)  # two sends and the summary
        self.assertTrue(written.endswith(b"\n"))


class CtrlBreak(unittest.TestCase):
    def test_sigbreak_is_handled_like_sigterm_where_signal_has_it(self):
        from iotpost import cli_run
        from iotpost.errors import Interrupted

        installed = {}
        with mock.patch.object(cli_run.signal, "SIGBREAK", 21, create=True), \
                mock.patch.object(cli_run.signal, "signal", lambda num, handler: installed.__setitem__(num, handler)):
            cli_run.install_signal_handlers()
            self.assertIn(21, installed)
            with self.assertRaises(Interrupted) as caught:
                installed[21](21, None)
        self.assertEqual(caught.exception.exit_code, 143)
        self.assertEqual(caught.exception.message, "interrupted by SIGBREAK")


if __name__ == "__main__":
    unittest.main()
