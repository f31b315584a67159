"""The one table of exit codes, and pure functions that map HTTP statuses and exceptions onto it.

Usage: ``for_http_status(503)  # -> ExitStatus.TEMPFAIL``

Values follow BSD sysexits.h where one fits, so shell scripts and cron wrappers can act on them.
"""

from __future__ import annotations

import enum


class ExitStatus(enum.IntEnum):
    OK = 0  # every payload accepted (2xx)
    INTERNAL = 1  # internal error: a bug; --debug shows the traceback
    USAGE = 2  # usage error: bad flags (argparse)
    DATA = 65  # bad input data, or the platform rejected the payload (400, 413, 415, 422, other 4xx)
    NOINPUT = 66  # a credential file is missing or unreadable
    TEMPFAIL = 75  # temporary failure, retry later: refused/reset, DNS, timeout, 408, 429, 5xx
    NOPERM = 77  # credentials rejected: 401, 403
    CONFIG = 78  # configuration: malformed bundle, non-HTTPS URL, 404/405, TLS verification failed
    SIGINT = 130  # interrupted by SIGINT (Ctrl-C)
    SIGTERM = 143  # interrupted by SIGTERM


def for_http_status(status: int) -> ExitStatus:
    """What a final HTTP status means for the run's exit code."""
    if 200 <= status < 300:
        return ExitStatus.OK
    if status in (401, 403):
        return ExitStatus.NOPERM
    if status in (404, 405) or 300 <= status < 400:
        # The URL or endpoint is wrong (we never follow redirects with a POST body).
        return ExitStatus.CONFIG
    if status in (408, 429) or 500 <= status < 600:
        return ExitStatus.TEMPFAIL
    if 400 <= status < 500:
        return ExitStatus.DATA
    return ExitStatus.TEMPFAIL  # 1xx or nonsense: a broken server or proxy, try again later


def is_retryable_status(status: int) -> bool:
    """Only statuses that can succeed if the same request is sent again later."""
    return for_http_status(status) is ExitStatus.TEMPFAIL


def means_platform_down(status: int) -> bool:
    """The platform (or what stands in front of it) is not taking requests: an outage, not this payload.

    A 500 may be the payload's own fault (a value its database cannot store), so it is not here:
    a payload failing with it while the platform accepts others is eventually a dead letter.
    """
    return status in (408, 429, 502, 503, 504)


def is_payload_rejected(status: int) -> bool:
    """The platform said no to this payload itself (a 4xx that is neither auth, URL nor "later").

    Resending it can never succeed, so it becomes a dead letter instead of blocking the spool:
    400, 409, 413, 415, 422 and every other 4xx that for_http_status calls DATA.
    """
    return 400 <= status < 500 and for_http_status(status) is ExitStatus.DATA


# Which error wins when one run ends with several kinds: the one a person must act on first.
_SEVERITY = [
    ExitStatus.OK,
    ExitStatus.TEMPFAIL,
    ExitStatus.DATA,
    ExitStatus.NOPERM,
    ExitStatus.NOINPUT,
    ExitStatus.CONFIG,
    ExitStatus.USAGE,
    ExitStatus.INTERNAL,
    ExitStatus.SIGINT,
    ExitStatus.SIGTERM,
]


def worst(*codes: ExitStatus) -> ExitStatus:
    """Combine outcomes of one run into one exit code (interruptions and bugs win)."""
    return max(codes, key=_SEVERITY.index, default=ExitStatus.OK)
