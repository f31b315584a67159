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

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, Dict, Iterable, List, Optional, Set, Union

from .environment import Environment
from .errors import InputDataError, IotPostError, TransientError
from .exitcodes import (ExitStatus, for_http_status, is_payload_rejected, is_retryable_status,
                        means_platform_down, worst)
from .output import Redactor, Reporter, SendRecord, short_message
from .profiles import USER_AGENT, Credentials, Profile
from .retry import RetryPolicy, parse_retry_after, retry_after_in_body
from .target import GENERIC_NAMES, SettingNames
from .transport import Response, Transport
from .records import Record


def error_for_response(status: int, reason: str, message: str, url: str, seq: int,
                       location: Optional[str] = None, auth_hint: str = "check the credentials",
                       names: SettingNames = GENERIC_NAMES,
                       refused: str = "the platform rejected the credentials",
                       what: Optional[str] = None) -> IotPostError:
    """The one-line error, exit code and hint for a final non-2xx answer.

    ``names`` (the command's Profile.names) words the hints in that command's own flags;
    ``refused`` and ``auth_hint`` (Profile.refusal) say what a 401 refused, in its words;
    ``what`` names what was sent (default "payload #seq"; a batch names its payloads).
    """
    subject = what or "payload #%d" % seq
    code = for_http_status(status)
    plain = message in ("", reason, "%d %s" % (status, reason))  # an HTML page's title often is just that
    said = "%d %s%s" % (status, reason, "" if plain else ": " + message)
    if status == 401:
        err = IotPostError("%s (%s), while sending %s" % (refused, said, subject),
                           hint=auth_hint)
    elif status == 403:
        err = IotPostError("the platform refused this device (%s), while sending %s" % (said, subject),
                           hint=auth_hint)
    elif 300 <= status < 400:
        err = IotPostError("%s redirects (%s) to %s, while sending %s"
                           % (url, said, location or "?", subject),
                           hint="a POST is never redirected: put the final URL in %s" % names.url)
    elif status in (404, 405):
        err = IotPostError("%s is not a telemetry endpoint (%s), while sending %s" % (url, said, subject),
                           hint="check %s%s" % (names.url, " and " + names.endpoint if names.endpoint else ""))
    elif code is ExitStatus.DATA:
        err = IotPostError("the platform rejected %s (%s)" % (subject, said),
                           hint="check the payload (--dry-run shows it); with --spool it is kept as a dead letter")
    else:
        err = IotPostError("the platform failed %s (%s)" % (subject, said),
                           hint="the platform is busy or down; retry later (--spool keeps payloads for that)")
    err.exit_code = code
    return err


class RunResult(Record):
    exit_code: ExitStatus
    error: Optional[IotPostError]  # what to print last, if anything went wrong
    records: List[SendRecord]


class _Held(Record):
    """A payload the platform failed (5xx) while the link worked: skipped for the rest of the run."""

    item: object
    seq: int
    status: int
    message: str
    attempts: int


class _Outcome(Record):
    """How one request ended: its last answer (None: none came), and whether its retries were spent."""

    response: Optional[Response]
    message: str
    error: Optional[IotPostError]
    attempts: int
    spent: bool  # a retryable failure that is still failing when the retries ran out


class Sender:
    """Owns one run's sending: spool, retries, output records and the exit code they add up to.

    The exit code comes from where the payloads end up, not from the trouble on the way: a
    payload that needed retries but arrived is a success; one left waiting is 75, one the
    platform rejected (a dead letter) 65; credentials (77) and configuration (78) stop the run.
    """

    def __init__(self, transport: Transport, profile: Profile, creds: Credentials, spool,
                 retry: RetryPolicy, reporter: Reporter, env: Environment,
                 dead_letter_after: int = 5, batch_size: int = 1, batch_path: Optional[str] = None) -> None:
        self.transport = transport
        self.profile = profile
        self.creds = creds
        self.spool = spool
        self.retry = retry
        self.out = reporter
        self.env = env
        self.dead_letter_after = dead_letter_after
        self.records: List[SendRecord] = []
        self._redact = Redactor(creds.secrets())
        self._seq_of: Dict[int, int] = {}  # spool id -> payload number in this run
        self._new_ids: Set[int] = set()  # spool ids of payloads this run accepted (the rest is backlog)
        self._held: Dict[int, _Held] = {}
        self._urls: Dict[str, str] = {}  # request path -> its URL, for output and messages
        self._said = (None, "")  # the last answer's body and its short message (the secrets never change in a run)
        self.retries = 0
        self.input_errors = 0
        self.delivered = 0
        self.rejected = 0  # moved to the dead letters by this run
        self.backlog_delivered = 0
        self.backlog_oldest: Optional[float] = None  # wall-clock creation time of the oldest one
        self.code = ExitStatus.OK  # the worst outcome that does not pass by itself
        self.error: Optional[IotPostError] = None
        self._trouble: Optional[IotPostError] = None  # the last failure that may pass (75)
        self._stop = False
        self._link_down = False
        self._holds_in_a_row = 0  # payloads the platform failed since it last accepted one
        # Batches (--batch-size above 1): the batch endpoint's path, None when not batching or when
        # the platform turned out to have none (404/405); payloads of a failed batch still to send alone.
        self.batch_size = batch_size
        self.batch_path = batch_path if batch_size > 1 else None
        self._one_by_one = 0
        self.gatherer = None  # batches.Gatherer: new payloads of a burst wait for a full batch

    def run(self, bodies: Optional[Iterable[Union[bytes, InputDataError]]],
            new_key: Callable[[], str]) -> RunResult:
        """Accept each new body, then send what is spooled, oldest first; keep the spool consistent.

        ``bodies`` None is --flush-spool: the backlog alone. A new body is spooled before the
        backlog is drained, so a backlog that cannot be sent (a rotated key, an expired
        certificate) never costs this run its own reading.
        """
        from .startup import resume_gc

        resume_gc()  # a run may last days (--period): collect garbage from the first payload on
        first_bad: Optional[InputDataError] = None
        produced = 0
        try:
            for body in bodies if bodies is not None else ():
                if self._stop:
                    break  # a batch sent while the source waited ended the run: nothing more is accepted
                if isinstance(body, InputDataError):
                    self.input_errors += 1
                    first_bad = first_bad or body
                    self.out.error(body.message, body.hint)
                    continue
                produced += 1
                self.accept(body, new_key())
                if self.gatherer is not None:
                    self.gatherer.add()  # drains once a batch is full (or the input is about to wait)
                else:
                    self.drain()
                if self._stop:
                    break
            if self.gatherer is not None and not self._stop:
                self.gatherer.flush()
            if not produced:  # --flush-spool, or an input without a reading: the backlog alone
                self.drain()
            self._settle_held()
        except BaseException:
            self._release_quietly()  # never let cleanup hide the error that got us here
            raise
        self.spool.release_all()
        if first_bad is not None:
            self._fail(InputDataError("%d input line(s) were invalid and skipped (the first: %s)"
                                      % (self.input_errors, first_bad.message), hint=first_bad.hint))
        elif bodies is not None and not produced:
            self._fail(InputDataError("the input held no reading, so nothing new was sent",
                                      hint="check what feeds the input (a dead sensor prints nothing); to send "
                                      "only the spool use --flush-spool"))
        self._account_for_leftovers()
        return RunResult(self.code, self.error, self.records)

    def _account_for_leftovers(self) -> None:
        """Payloads still waiting make the run 75, whatever trouble was ridden out on the way."""
        left = self.spool.unclaimed(self.profile.name, self.env.wall())  # not another live run's
        if not left or self.code in (ExitStatus.NOPERM, ExitStatus.CONFIG):
            return  # the error that stopped the run is the one to act on
        where = "kept in the spool for the next run" if self.spool.persistent else "not kept: no --spool"
        cause = "; last error: %s" % self._trouble.message if self._trouble is not None else ""
        hints = [self._trouble.hint] if self._trouble is not None and self._trouble.hint else []
        err = TransientError("%d payload(s) not delivered (%s)%s" % (left, where, cause),
                             hint="; ".join(hints + [self._pending_hint()]))
        if self.code is ExitStatus.OK:
            self.error, self.code = err, ExitStatus.TEMPFAIL
        else:
            self.out.warn(err.message, loud=True)  # the worse error is printed last; this one is not lost

    def _release_quietly(self) -> None:
        try:
            self.spool.release_all()
        except Exception:  # noqa: BLE001 - a later run's claim expiry recovers whatever this leaves
            pass

    def _pending_hint(self) -> str:
        if self.spool.persistent:
            return "run again with --flush-spool when the platform is reachable"
        return "retry later, or add --spool PATH so nothing is lost"

    def accept(self, body: bytes, key: str) -> None:
        """Spool a new payload (durably, with --spool) before any attempt to send it."""
        before = self.spool.dropped
        item = self.spool.put(self.profile.name, body, key, self.env.wall())
        self._new_ids.add(item.id)
        if self.spool.dropped > before:
            self.out.warn("spool is full (--spool-max): dropped %d oldest payload(s), %d this run"
                          % (self.spool.dropped - before, self.spool.dropped), loud=True)

    def drain(self) -> None:
        """Send what is spooled, oldest first, until empty or the link is down.

        After a payload the platform failed (held), the next try is the newest payload, as a probe:
        if the platform takes it, the failure was that payload's and the drain goes on oldest first;
        if it fails too, the platform is failing everything and the drain stops for this tick, so a
        platform answering 500 to all costs two payloads' retries, not the whole backlog's.
        """
        self._link_down = False
        self._holds_in_a_row = 0
        if self.gatherer is not None:
            self.gatherer.pending = 0  # whatever was gathered goes now
        while not self._stop and not self._link_down:
            if self._holds_in_a_row >= 2:
                self._link_down = True
                return
            probe = self._holds_in_a_row == 1
            if self.batch_path is not None and not probe and not self._one_by_one:
                items = self.spool.claim_batch(self.profile.name, self.env.wall(), self.batch_size)
                if not items:
                    return
                if len(items) > 1:
                    self._send_batch(items)
                    continue
                item = items[0]  # a batch of one goes as the single send it is
            else:
                item = self.spool.claim(self.profile.name, self.env.wall(), newest=probe)
                if item is None:
                    self._one_by_one = 0  # nothing left unclaimed: the failed batch's payloads are settled
                    return
                if not probe and self._one_by_one:
                    self._one_by_one -= 1
            self._send_item(item)

    def _send_item(self, item) -> None:
        """Attempt one payload until it is settled or its retries are spent."""
        seq = self._seq_of.setdefault(item.id, len(self._seq_of) + 1)
        headers = [("User-Agent", USER_AGENT)] + self.profile.headers(item.body, item.key, self.creds)
        outcome = self._attempt(self.transport.target.path, headers, item.body, seq)
        response, message, error, attempts = outcome.response, outcome.message, outcome.error, outcome.attempts
        if not outcome.spent:
            return self._settle(item, seq, attempts, response, message, error)
        if response is not None and not means_platform_down(response.status):
            return self._hold(item, seq, attempts, response, message)
        self._settle(item, seq, attempts, response, message, error)
        self._link_down = True  # stop draining this tick: the next payload would fail alike

    def _attempt(self, path: str, headers: list, body: bytes, seq: int, what: Optional[str] = None) -> _Outcome:
        """Send one request until it gets an answer that settles it, or its retries are spent."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self.transport.target._replace(path=path).url
        policy = self.retry
        started = self.env.monotonic()
        attempts = 0
        while True:
            attempts += 1
            if self.out.verbose:  # the traffic is shown under --verbose only: no call per payload otherwise
                self.out.request("POST", url, headers, body)
            try:
                response = self.transport.send("POST", path, headers, body)
            except IotPostError as exc:
                if exc.exit_code is not ExitStatus.TEMPFAIL:  # TLS verification, bad URL: no retry helps
                    return _Outcome(None, exc.message, exc, attempts, False)
                response, error, message, retry_after = None, exc, exc.message, None
            else:
                if self.out.verbose:
                    self.out.response(response.status, response.reason, response.headers)
                message = self._short_message(response.body) or response.reason
                error = None if 200 <= response.status < 300 else self._error_for(response, message, seq, url, what)
                if error is None or not is_retryable_status(response.status):
                    return _Outcome(response, message, error, attempts, False)
                retry_after = parse_retry_after(response.headers.get("retry-after"), self.env.wall())
                if retry_after is None and response.status == 429:
                    retry_after = retry_after_in_body(response.body)  # IoTFlow: in the body, no header
            delay = policy.next_delay(self.env.monotonic() - started, retry_after, self.env.rand)
            if delay is None:
                return _Outcome(response, message, error, attempts, True)
            self.retries += 1
            why = message if response is None else "%d %s" % (response.status, message)
            if what is not None:
                why = "%s: %s" % (what, why)
            self.out.retrying(seq, why, delay, attempts + 1, attempts + policy.total)
            self.env.sleep(delay)
            policy = policy.increment()

    def _short_message(self, body: bytes) -> str:
        """output.short_message of an answer's body; a burst's answers are mostly the same bytes, read once."""
        if body != self._said[0]:
            self._said = (body, short_message(body, redact=self._redact))
        return self._said[1]

    def _error_for(self, response: Response, message: str, seq: int, url: Optional[str] = None,
                   what: Optional[str] = None) -> Optional[IotPostError]:
        if 200 <= response.status < 300:
            return None
        refused, hint = self.profile.refusal(self.creds)
        if response.status != 401:
            hint = self.profile.auth_hint  # a 403 refuses the device, not a missing signature
        return error_for_response(response.status, response.reason, message, url or self.transport.target.url,
                                  seq, response.headers.get("location"), hint, self.profile.names, refused, what)

    # -- batches (--batch-size) ------------------------------------------------------------------

    @property
    def stopped(self) -> bool:
        """The run must end (credentials, configuration): nothing more is accepted or waited for."""
        return self._stop

    def _send_batch(self, items: list) -> None:
        """Send claimed payloads in one request to the batch endpoint; settle them all by its answer.

        Stored (results.failed 0): every payload leaves the spool. Credentials (77), configuration
        (78) and an outage (75) concern every payload alike: all are put back, as one payload would
        be. Anything else that leaves some payload in doubt (failures the answer does not name, a
        refused or failed batch, no batch endpoint) puts them back to be sent one by one, where
        each meets the usual rules (dead letters, holds); their own idempotency keys make that safe.
        """
        from .batches import batch_body, batch_key, batch_shortfall

        seqs = [self._seq_of.setdefault(item.id, len(self._seq_of) + 1) for item in items]
        what = "a batch of %d payloads (#%d-#%d)" % (len(items), min(seqs), max(seqs))
        keys = [item.key for item in items]
        body = batch_body([item.body for item in items], keys)
        headers = [("User-Agent", USER_AGENT)] + self.profile.headers(body, batch_key(keys), self.creds)
        outcome = self._attempt(self.batch_path, headers, body, seqs[0], what)
        response, message, error = outcome.response, outcome.message, outcome.error
        status = response.status if response is not None else None
        if error is None:
            why = batch_shortfall(response.body, len(items), self._redact)
            if why is None:
                return self._delivered_batch(items, seqs, outcome, "stored in a batch of %d" % len(items))
            self.out.warn("%s: %s; sending its payloads one by one" % (what, why))
            return self._send_alone(items, outcome, why)
        if status in (404, 405, 413):
            url = self.transport.target._replace(path=self.batch_path).url
            why = "a batch this large is refused" if status == 413 else "the platform has no batch endpoint"
            self.out.warn("%s answered %d %s: %s, so every payload goes in a request of its own for the rest of "
                          "this run" % (url, status, message, why))
            self.batch_path = None
            return self._send_alone(items, outcome, "%d %s" % (status, message))
        if status is not None and (is_payload_rejected(status) or (outcome.spent and not means_platform_down(status))):
            # A payload of the batch may be what the platform refuses or fails: find it by sending them alone.
            self.out.warn("the platform %s %s (%d %s); sending its payloads one by one" % (
                "rejected" if is_payload_rejected(status) else "failed", what, status, message))
            return self._send_alone(items, outcome, "%d %s" % (status, message))
        self._release_batch(items, seqs, outcome)
        if error.exit_code is ExitStatus.TEMPFAIL:
            self._trouble = error
            self._link_down = True  # an outage: the next batch would fail alike
        else:
            self._fail(error, stop=True)

    def _send_alone(self, items: list, outcome: _Outcome, why: str) -> None:
        """Put a batch's payloads back to be claimed and sent one by one, oldest first, by the drain."""
        response = outcome.response
        self.spool.release_batch(items, "in a batch: %s" % why, outcome.attempts,
                                 response.status if response is not None else None, self.env.wall())
        self._one_by_one += len(items)

    def _delivered_batch(self, items: list, seqs: List[int], outcome: _Outcome, message: str) -> None:
        self.spool.ack_batch(items, self.env.wall())  # the spool first, in one transaction
        for item, seq in zip(items, seqs):
            self._count_delivered(item)
            self._finish(item, seq, outcome.attempts, outcome.response, message, ok=True)

    def _release_batch(self, items: list, seqs: List[int], outcome: _Outcome) -> None:
        response = outcome.response
        self.spool.release_batch(items, outcome.message, outcome.attempts,
                                 response.status if response is not None else None, self.env.wall())
        for item, seq in zip(items, seqs):
            self._finish(item, seq, outcome.attempts, response, outcome.message, ok=False)

    def _settle(self, item, seq: int, attempts: int, response: Optional[Response], message: str,
                error: Optional[IotPostError]) -> None:
        """Move the payload (delivered, dead letter, or back for later), then record the outcome.

        The spool first: if printing fails (a closed pipe), the spool is already right.
        """
        now = self.env.wall()
        if error is None:
            self.spool.ack(item, now)
            self._count_delivered(item)
        elif response is not None and is_payload_rejected(response.status):
            self.spool.dead_letter(item, response.status, message, now)
            self.rejected += 1
        else:
            self.spool.release(item, message, attempts, response.status if response else None, now)
        self._finish(item, seq, attempts, response, message, ok=error is None)
        if error is None:
            return
        if error.exit_code is ExitStatus.TEMPFAIL:
            self._trouble = error  # what is left at the end decides the exit code
        else:
            # A rejected payload is a dead letter now: the next one may be fine. Anything else
            # (credentials 77, configuration 78) fails every payload alike, so it ends the run.
            self._fail(error, stop=error.exit_code is not ExitStatus.DATA)

    def _count_delivered(self, item) -> None:
        self.delivered += 1
        self._holds_in_a_row = 0
        if item.id not in self._new_ids:
            self.backlog_delivered += 1
            if self.backlog_oldest is None or item.created < self.backlog_oldest:
                self.backlog_oldest = item.created

    def _hold(self, item, seq: int, attempts: int, response: Response, message: str) -> None:
        """The platform answered but failed this payload: keep its claim, move on to the next one.

        Whether that counts against the payload is decided at the end of the run, once we know
        whether the platform accepted anything else (see _settle_held).
        """
        self._held[item.id] = _Held(item, seq, response.status, message, attempts)
        self._holds_in_a_row += 1
        self._finish(item, seq, attempts, response, message, ok=False)
        self._trouble = TransientError(
            "the platform failed payload #%d (%d %s); skipped it for the rest of this run"
            % (seq, response.status, message),
            hint="a payload the platform keeps failing while it takes others becomes a dead letter after "
            "--dead-letter-after runs; --spool-drop ID removes it sooner")

    def _settle_held(self) -> None:
        """Count a failed run against each held payload if the platform was up; dead-letter repeat offenders."""
        up = self.delivered > 0  # another payload got 2xx in this run: the failure is the payload's
        now = self.env.wall()
        for held in self._held.values():
            runs = self.spool.mark_failed_run(held.item.id) if up else 0
            if runs >= self.dead_letter_after:
                self.spool.dead_letter(held.item, held.status, held.message, now)
                self.rejected += 1
                self._fail(self._dead_letter_error(held, runs))
            else:
                self.spool.release(held.item, held.message, held.attempts, held.status, now)
        self._held.clear()

    def _dead_letter_error(self, held: _Held, runs: int) -> IotPostError:
        if self.spool.persistent:
            where, hint = "moved it to the dead letters", ("--dead-letters shows it; --spool-requeue ID sends it "
                                                           "again once the platform can take it")
        else:
            where, hint = "gave it up (without --spool there are no dead letters to keep it)", None
        err = IotPostError("payload #%d failed in %d run(s) in which the platform accepted other payloads "
                           "(last answer: %d %s); %s" % (held.seq, runs, held.status, held.message, where),
                           hint=hint)
        err.exit_code = ExitStatus.DATA
        return err

    def _finish(self, item, seq: int, attempts: int, response: Optional[Response], message: str,
                ok: bool) -> None:
        rec = SendRecord(seq, item.key, response.status if response else None, ok,
                         response.latency if response else None, attempts, message)
        self.records.append(rec)
        if self.out.mode != "quiet":  # --quiet prints no line per payload: no call per payload either
            self.out.sent(rec)

    def _fail(self, err: IotPostError, stop: bool = False) -> None:
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
            "accepted": len(self._new_ids),
            "attempted": len(last),
            "delivered": delivered,
            "failed": failed,
            "rejected": self.rejected,
            "retries": self.retries,
            "input_errors": self.input_errors,
            "backlog_delivered": self.backlog_delivered,
            "backlog_oldest_age_s": (round(self.env.wall() - self.backlog_oldest, 1)
                                     if self.backlog_oldest is not None else None),
            "elapsed_s": round(elapsed, 3),
            "exit_code": int(self.code),
        }
        if self.spool.persistent:
            fields["spooled"] = left
            fields["dropped"] = self.spool.dropped
        else:
            fields["undelivered"] = left
        return fields
