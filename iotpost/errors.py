"""One exception root for everything the tools know how to report; each carries its exit code.

Usage: ``raise CredentialError("api_key.txt is missing", hint="download the bundle again")``

The CLI wrapper (``iotpost.cli_run.run``) turns any ``IotPostError`` into one line on stderr,
``prog: error: message`` plus an optional ``hint: ...`` line, and exits with ``exit_code``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Optional

from .exitcodes import ExitStatus


class IotPostError(Exception):
    """Root of the errors we report ourselves (anything else is a bug: exit 1)."""

    exit_code: ExitStatus = ExitStatus.INTERNAL

    def __init__(self, message: str, hint: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(IotPostError):
    """Flags that make no sense together (argparse handles the rest)."""

    exit_code = ExitStatus.USAGE


class InputDataError(IotPostError):
    """--data / --data-file / --replay content is not what we accept."""

    exit_code = ExitStatus.DATA


class CredentialMissing(IotPostError):
    """A credential file is missing or unreadable."""

    exit_code = ExitStatus.NOINPUT


class ConfigError(IotPostError):
    """Malformed bundle file, bad URL, wrong endpoint, TLS verification failure."""

    exit_code = ExitStatus.CONFIG


class TLSVerifyError(ConfigError):
    """The server's certificate could not be verified against the bundle's CA."""


class ProxyAuthRefused(IotPostError):
    """The HTTP proxy refused our credentials (407, or 401 from tinyproxy) or the tunnel itself (403)."""

    exit_code = ExitStatus.NOPERM


class TransientError(IotPostError):
    """The network or the platform failed in a way that may succeed later."""

    exit_code = ExitStatus.TEMPFAIL


class SpoolFull(TransientError):
    """The disk under the spool is full: nothing already spooled is lost, but nothing new fits."""


class ClockNotSet(TransientError):
    """The system clock is before this release: a Pi without an RTC that has not synced NTP yet."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or (Windows) SIGBREAK arrived; raised from the signal handler so blocking calls return at once.

    A BaseException, like KeyboardInterrupt: no ``except Exception`` or ``except IotPostError`` on
    the way (a network error mapper, a best-effort probe) may take it for a failure and go on. Only
    ``cli_run.run`` and the code that prints the summary catch it.
    """

    exit_code: ExitStatus = ExitStatus.INTERNAL  # set per instance: SIGINT 130, SIGTERM/SIGBREAK 143

    def __init__(self, signum: int) -> None:
        import _signal as signal  # as cli_run: the same constants, without signal.py's enums

        # Windows' Ctrl+Break (SIGBREAK) asks the run to stop as SIGTERM does elsewhere: 143.
        names = {getattr(signal, "SIGTERM", -1): "SIGTERM", getattr(signal, "SIGBREAK", -2): "SIGBREAK"}
        name = names.get(signum, "SIGINT")
        super().__init__("interrupted by %s" % name)
        self.message = "interrupted by %s" % name
        self.hint: Optional[str] = None
        self.signum = signum
        self.exit_code = ExitStatus.SIGINT if name == "SIGINT" else ExitStatus.SIGTERM

    def __str__(self) -> str:
        return self.message


class CredentialsRefused(IotPostError):
    """The platform refused the user name and password (or key) we sent: 401/403."""

    exit_code = ExitStatus.NOPERM


class RequestRejected(IotPostError):
    """The platform answered a read or login with a 4xx that no retry can fix (not auth, not the URL)."""

    exit_code = ExitStatus.DATA
