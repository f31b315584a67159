"""Windows and macOS behaviour, simulated where the standard library allows (issue 15).

None of this runs on a real Windows or macOS here: a Windows closed pipe is a stream raising
OSError(EINVAL), the platform is ``os.name``/``sys.platform`` patched, and the Windows process
probe is injected (its ctypes calls cannot run on Linux).
"""

from __future__ import annotations

import contextlib
import errno
import io
import signal
import unittest

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


if __name__ == "__main__":
    unittest.main()
