"""What the user sees: one line per send, JSON Lines for CI, and secrets scrubbed from all of it.

Usage: ``out = Reporter(prog, sys.stdout, sys.stderr, mode="text", secrets=[api_key]); out.sent(record)``

Every line written goes through ``Redactor``, so a secret cannot leak even if a server echoes it
back in an error message. Results go to stdout; warnings, errors and --verbose traffic to stderr.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Iterable, List, Optional, Sequence, Tuple

from .console import write_safely
from .profiles import SECRET_HEADERS
from .records import Record

REDACTED = "[REDACTED]"


def is_closed_pipe(exc: OSError) -> bool:
    """The reader went away: BrokenPipeError on POSIX, OSError(EINVAL) from a Windows pipe.

    EINVAL from writing text to stdout or stderr means nothing else there, so it is taken for a
    closed pipe on every platform: the run goes on exactly as on Linux.
    """
    import errno

    return isinstance(exc, BrokenPipeError) or exc.errno == errno.EINVAL


def write_line(stream: IO[str], line: str) -> None:
    """Write and flush one line; a closed pipe silences the stream instead of ending the run."""
    try:
        write_safely(stream, line)  # a console that cannot encode "°" escapes it
        stream.flush()
    except OSError as exc:
        if not is_closed_pipe(exc):
            raise
        # The reader went away (``| head``, ``| Select-Object -First 1``): keep sending and
        # spooling, stop printing there.
        _silence(stream)


def _silence(stream: IO[str]) -> None:
    """Point a closed pipe's descriptor at /dev/null, so later writes and exit-time flushes succeed."""
    import os

    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def local_iso(epoch: float, milliseconds: bool = False) -> str:
    """Local time in ISO 8601 with its UTC offset (2026-11-27T16:45:03+07:00): what a cron log needs.

    Built from time.localtime rather than datetime, which a one-off send does not otherwise import.
    """
    import time

    tm = time.localtime(epoch)
    offset = tm.tm_gmtoff if tm.tm_gmtoff is not None else -time.timezone
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(int(offset)) // 60, 60)
    frac = ".%03d" % (int(epoch * 1000) % 1000) if milliseconds else ""
    return "%s%s%s%02d:%02d" % (time.strftime("%Y-%m-%dT%H:%M:%S", tm), frac, sign, hours, minutes)


class Redactor:
    """Replaces every known secret with [REDACTED] in any text on its way out.

    It keeps the collection it is given, so a secret loaded after the Redactor was made (the
    CLIs append to one list as they read credentials) is redacted from then on.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._source = secrets if isinstance(secrets, list) else list(secrets)

    def __call__(self, text: str) -> str:
        # Longest first so a secret that contains another is removed whole. Even a very short
        # secret is redacted: mangled output is better than a leaked credential.
        for secret in sorted({s for s in self._source if s}, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def redact_headers(headers: Sequence[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(k, REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers]


def short_message(body: bytes, limit: int = 120, redact: Callable[[str], str] = lambda s: s) -> str:
    """The server's own short message: JSON message/error, an HTML page's title, else the first line of text.

    An HTML page (nginx, a load balancer, a captive portal) gives its ``<title>``, or "" (the caller
    then uses the reason phrase): never markup. ``redact`` runs before truncation, so a secret cut in
    half by the limit cannot leak its start, and again after JSON or HTML decoding, which can turn an
    escaped secret (a JSON slash, a unicode escape, an HTML entity) into plain text.
    """
    text = redact(body.decode("utf-8", "replace")).strip().lstrip("\ufeff")
    if text.startswith("<"):
        text = redact(_html_title(text))
    try:
        doc = json.loads(text) if text else None
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, dict):
        for name in ("message", "error", "status"):
            value = doc.get(name)
            if isinstance(value, dict):
                value = value.get("message") or value.get("code")
            if isinstance(value, str) and value:
                text = value
                break
        if isinstance(doc.get("storedReadings"), int):
            # A TLINK webhook's answer, shown as what it is: storedReadings counts the entries the
            # receiver processed (a duplicate push says the same N); newReadings, where a receiver
            # adds it, what it newly stored.
            text = "accepted, storedReadings=%d" % doc["storedReadings"]
            if isinstance(doc.get("newReadings"), int):
                text += ", newReadings=%d" % doc["newReadings"]
    text = redact(text)
    line = text.splitlines()[0] if text else ""
    if not line.isprintable():  # most lines are: a burst pays this check per payload
        line = "".join(ch if ch.isprintable() else " " for ch in line)
    return line[: limit - 3] + "..." if len(line) > limit else line


def _html_title(markup: str) -> str:
    """The ``<title>`` of an HTML (or other markup) body, unescaped, whitespace collapsed, without
    a leading status code ("502 Bad Gateway" -> "Bad Gateway": the status is shown beside it)."""
    import html
    import re

    match = re.search(r"<title[^>]*>(.*?)</title\s*>", markup, re.IGNORECASE | re.DOTALL)
    if match is None:
        return ""
    title = " ".join(html.unescape(re.sub(r"<[^>]*>", " ", match.group(1))).split())
    return re.sub(r"^[1-5]\d\d(?:\s*[-:\u2013|]\s*|\s+)(?=\S)", "", title)


class SendRecord(Record):
    """The outcome of one payload in this run (after all its attempts)."""

    seq: int
    key: str
    status: Optional[int]  # None: no HTTP answer
    ok: bool
    latency: Optional[float]  # seconds, last attempt
    attempts: int
    message: str


# The version of every --json record's layout (README "JSON output"). Fields may be added within a
# version; renaming, removing or changing the meaning of one makes the next version.
JSON_SCHEMA = 1


class Reporter:
    """Formats events for people (text), for CI (json) or not at all (quiet)."""

    def __init__(self, prog: str, stdout: IO[str], stderr: IO[str], mode: str = "text",
                 verbose: bool = False, secrets: Iterable[str] = (), timestamps: bool = False,
                 clock: Optional[Callable[[], float]] = None) -> None:
        self.prog = prog
        self.stdout = stdout
        self.stderr = stderr
        self.mode = mode  # "text" | "json" | "quiet"
        self.verbose = verbose
        self.redact = Redactor(secrets)
        self.timestamps = timestamps  # human lines start with the local time
        if clock is None:
            import time

            clock = time.time
        self.clock = clock

    def _write(self, stream: IO[str], line: str, stamp: bool = True) -> None:
        if stamp and self.timestamps:
            now = local_iso(self.clock())
            line = "\n".join("%s %s" % (now, part) for part in line.split("\n"))
        write_line(stream, self.redact(line) + "\n")

    def _redact_values(self, value: Any) -> Any:
        """Redact inside strings before JSON escaping, which would hide a secret holding " or \\."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: self._redact_values(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._redact_values(v) for v in value]
        return value

    def json_line(self, obj: dict) -> None:
        """One JSON Lines record, led by ``"schema"`` (JSON_SCHEMA); event records carry ``at``, the local
        time they were written."""
        obj = dict({"schema": JSON_SCHEMA}, **obj)
        if "event" in obj and "at" not in obj:
            obj["at"] = local_iso(self.clock(), milliseconds=True)
        value = self._redact_values(obj)
        text = json.dumps(value, ensure_ascii=False)
        try:
            text.encode(getattr(self.stdout, "encoding", None) or "utf-8")
        except (UnicodeEncodeError, LookupError):  # \u escapes: _write's \xb0 fallback is not JSON
            text = json.dumps(value, ensure_ascii=True)
        self._write(self.stdout, text, stamp=False)

    def info(self, line: str) -> None:
        """A plain result line on stdout (reports such as --spool-status)."""
        self._write(self.stdout, line)

    def notice(self, message: str) -> None:
        """A line worth reading even under --quiet (a backlog delivered after an outage)."""
        if self.mode == "json":
            self.json_line({"event": "notice", "message": message})
        else:
            self._write(self.stdout, "%s: %s" % (self.prog, message))

    def warn(self, message: str, loud: bool = False) -> None:
        """A warning on stderr; quiet mode keeps only the loud ones (data being dropped)."""
        if self.mode == "quiet" and not loud:
            return
        self._write(self.stderr, "%s: warning: %s" % (self.prog, message))

    def error(self, message: str, hint: Optional[str] = None) -> None:
        self._write(self.stderr, "%s: error: %s" % (self.prog, message))
        if hint:
            self._write(self.stderr, "%s: hint: %s" % (self.prog, hint))

    def request(self, method: str, url: str, headers: Sequence[Tuple[str, str]], body: bytes) -> None:
        if not self.verbose:
            return
        self._write(self.stderr, "> %s %s" % (method, url))
        for name, value in redact_headers(headers):
            self._write(self.stderr, "> %s: %s" % (name, value))
        self._write(self.stderr, "> (%d bytes of body)" % len(body))

    def response(self, status: int, reason: str, headers: dict) -> None:
        if not self.verbose:
            return
        self._write(self.stderr, "< %d %s" % (status, reason))
        for name, value in headers.items():
            self._write(self.stderr, "< %s: %s" % (name, value))

    def waiting(self, seconds: float, why: str) -> None:
        """A deliberate wait before sending (--jitter): said under --verbose only."""
        if self.verbose:
            self._write(self.stderr, "%s: waiting %.1f s (%s) before the first send" % (self.prog, seconds, why))

    def retrying(self, seq: int, why: str, delay: float, next_attempt: int, max_attempts: int) -> None:
        if self.mode == "json":
            self.json_line({"event": "retry", "seq": seq, "reason": why, "delay_s": round(delay, 3),
                            "next_attempt": next_attempt, "max_attempts": max_attempts})
            return
        self.warn("#%d %s; retrying in %.1f s (attempt %d of %d)" % (seq, why, delay, next_attempt, max_attempts))

    def sent(self, rec: SendRecord) -> None:
        if self.mode == "json":
            self.json_line({
                "event": "send", "seq": rec.seq, "ok": rec.ok, "status": rec.status,
                "latency_ms": None if rec.latency is None else round(rec.latency * 1000, 1),
                "attempts": rec.attempts, "message": rec.message, "idempotency_key": rec.key,
            })
        elif self.mode == "text":
            status = str(rec.status) if rec.status is not None else "---"
            latency = " %.1f ms" % (rec.latency * 1000) if rec.latency is not None else ""
            tries = "" if rec.attempts == 1 else " (%d attempts)" % rec.attempts
            self._write(self.stdout, "#%d %s%s %s%s" % (rec.seq, status, latency, rec.message, tries))

    def dry_run(self, seq: int, method: str, url: str, headers: Sequence[Tuple[str, str]],
                body: bytes) -> None:
        shown = redact_headers(headers)
        try:
            decoded: object = json.loads(body.decode("utf-8"))
        except ValueError:
            decoded = body.decode("utf-8", "replace")
        exact = body.decode("utf-8", "backslashreplace")
        if self.mode == "json":
            # "body_text" is the body exactly as signed and sent; "body" the same, decoded for reading.
            self.json_line({"event": "dry_run", "seq": seq, "method": method, "url": url,
                            "headers": dict(shown), "body": decoded, "body_text": exact})
            return
        lines = ["# dry run #%d: nothing is sent" % seq, "%s %s" % (method, url)]
        lines += ["%s: %s" % kv for kv in shown]
        # The body alone on its line, exactly as signed and sent (generated bodies are ASCII JSON),
        # so that line and the signature header line can be replayed with curl.
        lines += ["", exact, ""]
        for line in lines:
            self._write(self.stdout, line)

    def summary(self, fields: dict) -> None:
        if self.mode == "json":
            self.json_line(dict({"event": "summary"}, **fields))
        elif self.mode == "text":
            parts = ["%d new" % fields["accepted"], "%d attempted" % fields["attempted"],
                     "%d delivered" % fields["delivered"]]
            for name, label in (("failed", "failed"), ("rejected", "rejected"), ("retries", "retries"),
                                ("input_errors", "bad input lines"),
                                ("backlog_delivered", "from the backlog"), ("spooled", "left in spool"),
                                ("undelivered", "not delivered"), ("dropped", "dropped from spool")):
                if fields.get(name):
                    parts.append("%d %s" % (fields[name], label))
            self._write(self.stdout, "summary: %s in %.1f s (exit %d)"
                        % (", ".join(parts), fields["elapsed_s"], fields["exit_code"]))
