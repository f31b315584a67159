"""Getting payloads to the platform: spool first, retry what can succeed, stop on what cannot.

Usage::

    sender = Sender(transport, TESAIOT, creds, spool, RetryPolicy(), reporter, env)
    result = sender.run(bodies, new_idempotency_key)   # bodies: bytes, or InputDataError for a bad line

Every payload goes into the spool (memory or SQLite) before its first attempt and leaves it only
when the platform answered 2xx, or said the payload itself is invalid (dead letter). The run
drains the spool oldest first after each new payload, so a backlog is sent before new readings
and a reading that failed is tried again before the next one. Anything else stays for later.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Union

from .environment import Environment
from .errors import InputDataError, IotPostError, TransientError
from .exitcodes import ExitStatus, for_http_status, is_payload_rejected, is_retryable_status, worst
from .output import Redactor, Reporter, SendRecord, short_message
from .profiles import USER_AGENT, Credentials, Profile
from .retry import RetryPolicy, parse_retry_after
from .target import GENERIC_NAMES, SettingNames
from .transport import Response, Transport



def error_for_response(status: int, reason: str, message: str, url: str, seq: int,
                       location: Optional[str] = None, auth_hint: str = "check the credentials",
                       names: SettingNames = GENERIC_NAMES) -> IotPostError:
    """The one-line error, exit code and hint for a final non-2xx answer.

    ``names`` (the command's Profile.names) words the hints in that command's own flags.
    """
    code = for_http_status(status)
    plain = message in ("", reason, "%d %s" % (status, reason))  # an HTML page's title often is just that
    said = "%d %s%s" % (status, reason, "" if plain else ": " + message)
    if status == 401:
        err = IotPostError("the platform rejected the credentials (%s), while sending payload #%d" % (said, seq),
                           hint=auth_hint)
    elif status == 403:
        err = IotPostError("the platform refused this device (%s), while sending payload #%d" % (said, seq),
                           hint=auth_hint)
    elif 300 <= status < 400:
        err = IotPostError("%s redirects (%s) to %s, while sending payload #%d"
                           % (url, said, location or "?", seq),
                           hint="a POST is never redirected: put the final URL in %s" % names.url)
    elif status in (404, 405):
        err = IotPostError("%s is not a telemetry endpoint (%s), while sending payload #%d" % (url, said, seq),
                           hint="check %s%s" % (names.url, " and " + names.endpoint if names.endpoint else ""))
    elif code is ExitStatus.DATA:
        err = IotPostError("the platform rejected payload #%d (%s)" % (seq, said),
                           hint="check the payload (--dry-run shows it); with --spool it is kept as a dead letter")
    else:
        err = IotPostError("the platform failed payload #%d (%s)" % (seq, said),
                           hint="the platform is busy or down; retry later (--spool keeps payloads for that)")
    err.exit_code = code
    return err


class RunResult(NamedTuple):
    exit_code: ExitStatus
    error: Optional[IotPostError]  # what to print last, if anything went wrong
    records: List[SendRecord]


class Sender:
    """Owns one run's sending: spool, retries, output records and the exit code they add up to."""

    def __init__(self, transport: Transport, profile: Profile, creds: Credentials, spool,
                 retry: RetryPolicy, reporter: Reporter, env: Environment) -> None:
        self.transport = transport
        self.profile = profile
        self.creds = creds
        self.spool = spool
        self.retry = retry
        self.out = reporter
        self.env = env
        self.records: List[SendRecord] = []
        self._redact = Redactor(creds.secrets())
        self._seq_of: Dict[int, int] = {}  # spool id -> payload number in this run
        self.retries = 0
        self.accepted = 0
        self.input_errors = 0
        self.code = ExitStatus.OK
        self.error: Optional[IotPostError] = None
        self._stop = False
        self._link_down = False

    def run(self, bodies: Iterable[Union[bytes, InputDataError]], new_key: Callable[[], str]) -> RunResult:
        """Accept each new body, then send what is spooled, oldest first; keep the spool consistent.

        A new body is spooled before the backlog is drained, so a backlog that cannot be sent
        (a rotated key, an expired certificate) never costs this run its own reading.
        """
        first_bad: Optional[InputDataError] = None
        produced = False
        try:
            for body in bodies:
                produced = True
                if isinstance(body, InputDataError):
                    self.input_errors += 1
                    first_bad = first_bad or body
                    self.out.error(body.message, body.hint)
                    continue
                self.accept(body, new_key())
                self.drain()
                if self._stop:
                    break
            if not produced:  # --flush-spool, or an empty input: the backlog alone
                self.drain()
        except BaseException:
            self._release_quietly()  # never let cleanup hide the error that got us here
            raise
        self.spool.release_all()
        if first_bad is not None:
            self._fail(InputDataError("%d input line(s) were invalid and skipped (the first: %s)"
                                      % (self.input_errors, first_bad.message), hint=first_bad.hint), stop=False)
        left = self.spool.unclaimed(self.profile.name, self.env.wall())  # not another live run's
        if left and self.code in (ExitStatus.OK, ExitStatus.TEMPFAIL):
            where = "kept in the spool for the next run" if self.spool.persistent else "not kept: no --spool"
            cause = "; last error: %s" % self.error.message if self.error is not None else ""
            self.error = TransientError("%d payload(s) not delivered (%s)%s" % (left, where, cause),
                                        hint=self._pending_hint())
            self.code = ExitStatus.TEMPFAIL
        return RunResult(self.code, self.error, self.records)

    def _release_quietly(self) -> None:
        try:
            self.spool.release_all()
        except Exception:  # noqa: BLE001 - a later run's claim expiry recovers whatever this leaves
            pass

    def _pending_hint(self) -> str:
        if self.spool.persistent:
            return "run again with --flush-spool when the platform is reachable"
        return "the platform was unreachable; retry later, or add --spool PATH so nothing is lost"

    def accept(self, body: bytes, key: str) -> None:
        """Spool a new payload (durably, with --spool) before any attempt to send it."""
        before = self.spool.dropped
        self.spool.put(self.profile.name, body, key, self.env.wall())
        self.accepted += 1
        if self.spool.dropped > before:
            self.out.warn("spool is full (--spool-max): dropped %d oldest payload(s), %d this run"
                          % (self.spool.dropped - before, self.spool.dropped), loud=True)

    def drain(self) -> None:
        """Send what is spooled, oldest first, until empty or the link is down."""
        self._link_down = False
        while not self._stop and not self._link_down:
            item = self.spool.claim(self.profile.name, self.env.wall())
            if item is None:
                return
            self._send_item(item)

    def _send_item(self, item) -> None:
        """Attempt one payload until it is settled or its retries are spent."""
        seq = self._seq_of.setdefault(item.id, len(self._seq_of) + 1)
        headers = [("User-Agent", USER_AGENT)] + self.profile.headers(item.body, item.key, self.creds)
        policy = self.retry
        started = self.env.monotonic()
        attempts = 0
        while True:
            attempts += 1
            self.out.request("POST", self.transport.target.url, headers, item.body)
            try:
                response = self.transport.send("POST", self.transport.target.path, headers, item.body)
            except IotPostError as exc:
                if exc.exit_code is not ExitStatus.TEMPFAIL:  # TLS verification, bad URL: no retry helps
                    return self._settle(item, seq, attempts, None, exc.message, exc)
                response, error, message, retry_after = None, exc, exc.message, None
            else:
                self.out.response(response.status, response.reason, response.headers)
                message = short_message(response.body, redact=self._redact) or response.reason
                error = self._error_for(response, message, seq)
                if error is None or not is_retryable_status(response.status):
                    return self._settle(item, seq, attempts, response, message, error)
                retry_after = parse_retry_after(response.headers.get("retry-after"), self.env.wall())
            delay = policy.next_delay(self.env.monotonic() - started, retry_after, self.env.rand)
            if delay is None:
                self._settle(item, seq, attempts, response, message, error)
                self._link_down = True  # stop draining this tick: the next payload would fail alike
                return
            self.retries += 1
            why = message if response is None else "%d %s" % (response.status, message)
            self.out.retrying(seq, why, delay, attempts + 1, attempts + policy.total)
            self.env.sleep(delay)
            policy = policy.increment()

    def _error_for(self, response: Response, message: str, seq: int) -> Optional[IotPostError]:
        if 200 <= response.status < 300:
            return None
        return error_for_response(response.status, response.reason, message, self.transport.target.url, seq,
                                  response.headers.get("location"), self.profile.auth_hint)

    def _settle(self, item, seq: int, attempts: int, response: Optional[Response], message: str,
                error: Optional[IotPostError]) -> None:
        """Move the payload (delivered, dead letter, or back for later), then record the outcome.

        The spool first: if printing fails (a closed pipe), the spool is already right.
        """
        if error is None:
            self.spool.ack(item)
        elif response is not None and is_payload_rejected(response.status):
            self.spool.dead_letter(item, response.status, message, self.env.wall())
        else:
            self.spool.release(item, message, attempts)
        self._finish(item, seq, attempts, response, message, ok=error is None)
        if error is not None:
            self._fail(error, stop=error.exit_code is not ExitStatus.TEMPFAIL)

    def _finish(self, item, seq: int, attempts: int, response: Optional[Response], message: str,
                ok: bool) -> None:
        rec = SendRecord(seq, item.key, response.status if response else None, ok,
                         response.latency if response else None, attempts, message)
        self.records.append(rec)
        self.out.sent(rec)

    def _fail(self, err: IotPostError, stop: bool) -> None:
        """Remember the worst outcome; the first error of the winning kind is the one reported."""
        combined = worst(self.code, err.exit_code)
        if combined != self.code or self.error is None:
            self.error = err
        self.code = combined
        if stop:
            self._stop = True

    def summary_fields(self, elapsed: float) -> dict:
        last = {r.seq: r for r in self.records}  # a payload tried again on a later tick counts once
        delivered = sum(1 for r in last.values() if r.ok)
        failed = len(last) - delivered
        left = self.spool.unclaimed(self.profile.name, self.env.wall())
        fields = {
            "accepted": self.accepted,
            "attempted": len(last),
            "delivered": delivered,
            "failed": failed,
            "retries": self.retries,
            "input_errors": self.input_errors,
            "elapsed_s": round(elapsed, 3),
            "exit_code": int(self.code),
        }
        if self.spool.persistent:
            fields["spooled"] = left
            fields["dropped"] = self.spool.dropped
        else:
            fields["undelivered"] = left
        return fields

