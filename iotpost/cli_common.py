"""What post_https_sample.py and tlink_push.py share: flags, settings, and running a send.

Usage (inside a CLI module)::

    parser = argparse.ArgumentParser(...); add_sending_arguments(parser)
    common = common_settings(parser.parse_args(argv))
    return send_all(common, profile, creds, target, ca_file, make_bodies, reporter, env, ssl_context)

Arguments become a frozen ``CommonSettings`` here; nothing below the CLI layer reads argparse.
"""

from __future__ import annotations

import argparse
import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, Iterable, List, Mapping, Optional, Tuple, Union

from .environment import Environment, SimulatedClock
from .errors import InputDataError, Interrupted, UsageError
from .exitcodes import ExitStatus
from .output import Reporter
from .payloads import new_idempotency_key
from .profiles import USER_AGENT, Credentials, Profile
from .retry import DEFAULT_MAX_RETRY_TIME, DEFAULT_RETRIES, RetryPolicy
from .target import Target
from .user_paths import user_path, user_path_text
from .records import Record

SPOOL_ENV = "IOTPOST_SPOOL"
# A payload the platform fails (5xx) in this many runs in which it accepted others is a dead letter.
DEFAULT_DEAD_LETTER_AFTER = 5
if TYPE_CHECKING:  # ssl is imported by tlsctx only when a context is built
    import ssl

if TYPE_CHECKING:
    Bodies = Iterable[Union[bytes, InputDataError]]


class CommonSettings(Record):
    timeout: float
    interval: float
    count: int
    period_min: float
    dry_run: bool
    output: str  # text | json | quiet
    verbose: bool
    allow_http: bool
    retries: int
    max_retry_time: float
    retry_backoff: float
    spool: Optional[Path]  # a spool loads sqlite3 and pathlib anyway: a Path, as spool.py takes it
    spool_max: Optional[int]
    flush_spool: bool
    spool_status: bool
    dead_letters: bool
    seed: Optional[int]
    spool_drop: Optional[int] = None  # a pending payload's spool id to delete
    spool_requeue: Optional[int] = None  # a dead letter's id to put back in the queue
    dead_letter_after: int = DEFAULT_DEAD_LETTER_AFTER  # runs with the platform up that a payload may fail
    proxy: Optional[str] = None  # --proxy URL (None: from the environment, as curl)
    noproxy: Optional[str] = None  # --noproxy LIST
    timestamps: bool = False  # prefix human lines with the local time
    jitter: float = 0.0  # --jitter: wait a random 0..jitter seconds before the first send
    batch_size: int = 1  # --batch-size: payloads per request to the platform's batch endpoint (1: none)


def seconds_type(low: float, high: float, low_inclusive: bool = True):
    """An argparse type for a finite number in a sane range (no 1e300-second timeouts)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if not (value >= low if low_inclusive else value > low) or not value <= high:
            raise argparse.ArgumentTypeError("%r must be %s %g and at most %g"
                                             % (text, ">=" if low_inclusive else ">", low, high))
        return value

    return parse


def whole_type(low: int):
    """An argparse type for a whole number of at least ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None
        if value < low:
            raise argparse.ArgumentTypeError("must be at least %d" % low)
        return value

    return parse


MAX_BATCH = 1000  # TESAIoT's limit per batch request (batches.MAX_BATCH; not imported on a one-off send)


def batch_size_type(text: str) -> int:
    """--batch-size: 1 to MAX_BATCH."""
    value = whole_type(1)(text)
    if value > MAX_BATCH:
        raise argparse.ArgumentTypeError("must be at most %d (the platform takes up to %d payloads per batch)"
                                         % (MAX_BATCH, MAX_BATCH))
    return value


def add_sending_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every sender has, with the seed's defaults."""
    g = parser.add_argument_group("sending")
    g.add_argument("--timeout", type=seconds_type(0, 3600, low_inclusive=False), default=10.0,
                   metavar="SECONDS", help="network timeout per request (default: 10)")
    g.add_argument("--interval", type=seconds_type(0, 86400), default=5.0, metavar="SECONDS",
                   help="seconds between payloads, measured from start times (default: 5)")
    g.add_argument("--count", type=whole_type(1), default=1, metavar="N", help="payloads to send (default: 1)")
    g.add_argument("--period", type=seconds_type(0, 525600), default=0.0, metavar="MINUTES",
                   help="send every --interval for this many minutes; --count is then ignored "
                   "(default: 0 = off)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the requests that would be sent (key redacted) and contact nothing")
    g.add_argument("--allow-http", action="store_true",
                   help="permit a plain http:// URL to this machine only (local development servers)")
    g.add_argument("--jitter", type=seconds_type(0, 3600), default=0.0, metavar="SECONDS",
                   help="wait a random time from 0 to SECONDS before the first send, so a fleet started by "
                   "one cron minute does not send at once (default 0)")
    g.add_argument("--seed", type=int, default=None, help="seed for generated values (reproducible runs)")
    r = parser.add_argument_group("reliability")
    r.add_argument("--retries", type=whole_type(0), default=DEFAULT_RETRIES, metavar="N",
                   help="retries per payload for failures that can succeed later (default: %d)" % DEFAULT_RETRIES)
    r.add_argument("--max-retry-time", type=seconds_type(0, 86400), default=DEFAULT_MAX_RETRY_TIME, metavar="SECONDS",
                   help="give up retrying one payload after this long (default: %g)" % DEFAULT_MAX_RETRY_TIME)
    r.add_argument("--retry-backoff", type=seconds_type(0, 3600), default=0.5, metavar="SECONDS",
                   help="first backoff between retries, doubled each time with jitter, at most 30 s "
                   "(default: 0.5); a server's Retry-After wins")
    r.add_argument("--spool", type=user_path, default=None, metavar="PATH",
                   help="keep payloads in this SQLite file until the platform has them "
                   "(env %s)" % SPOOL_ENV)
    r.add_argument("--spool-max", type=whole_type(1), default=None, metavar="N",
                   help="keep at most N payloads in the spool, dropping the oldest (reported)")
    r.add_argument("--flush-spool", action="store_true",
                   help="send only what is in the spool; generate nothing")
    r.add_argument("--spool-status", action="store_true",
                   help="show the spool's counts, oldest payload and dead letters, then exit")
    r.add_argument("--dead-letters", action="store_true",
                   help="print the payloads the platform rejected as JSON Lines, then exit")
    r.add_argument("--spool-drop", type=whole_type(1), default=None, metavar="ID",
                   help="delete the pending payload with this id (see --spool-status), then exit")
    r.add_argument("--spool-requeue", type=whole_type(1), default=None, metavar="ID",
                   help="put the dead letter with this id (see --dead-letters) back in the queue, then exit")
    r.add_argument("--batch-size", type=batch_size_type, default=1, metavar="N",
                   help="send the spooled backlog and bursts N payloads per request (at most %d) to the "
                   "telemetry endpoint's /batch (TESAIoT only; default 1: one request per payload)" % MAX_BATCH)
    r.add_argument("--dead-letter-after", type=whole_type(1), default=DEFAULT_DEAD_LETTER_AFTER, metavar="RUNS",
                   help="a payload the platform fails (5xx) in this many runs in which it accepted other "
                   "payloads becomes a dead letter (default: %d)" % DEFAULT_DEAD_LETTER_AFTER)
    n = parser.add_argument_group("network")
    n.add_argument("--proxy", default=None, metavar="URL",
                   help="reach the platform through this http:// proxy with CONNECT (default: $HTTPS_PROXY, "
                   "as curl); user:password@ in the URL is sent as Proxy-Authorization")
    n.add_argument("--noproxy", default=None, metavar="LIST",
                   help="comma-separated hosts or domains to reach directly; '*' bypasses every proxy "
                   "(default: $NO_PROXY)")
    o = parser.add_argument_group("output")
    mode = o.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help="JSON Lines on stdout: one object per send, then a summary")
    mode.add_argument("--quiet", action="store_true", help="print only errors")
    o.add_argument("--verbose", action="store_true",
                   help="also print each request line and headers on stderr (secrets redacted)")
    o.add_argument("--timestamps", action="store_true",
                   help="start every human line with the local time (ISO 8601 with UTC offset); "
                   "--json records always carry \"at\"")
    o.add_argument("--debug", action="store_true", help="show a traceback for internal errors")


class TLSSettings(Record):
    """The TLS flags (mTLS client certificate, public-key pins); the CA comes from each CLI."""

    client_cert: Optional[str] = None  # str, spelled as str(Path(...)): see user_paths
    client_key: Optional[str] = None
    client_key_password_file: Optional[str] = None
    pins: Tuple[str, ...] = ()


def _pins(text: str) -> List[str]:
    from .tlsctx import parse_pins

    try:
        return parse_pins(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_tls_arguments(parser: argparse.ArgumentParser, bundle: bool = True) -> None:
    """mTLS and pinning flags; ``bundle``: the client certificate may also come from the bundle."""
    from .tlsctx import CLIENT_KEY_PASSWORD_ENV

    t = parser.add_argument_group("TLS (the server is always verified against the CA)")
    t.add_argument("--client-cert", type=user_path_text, default=None, metavar="PEM",
                   help="present this client certificate (mTLS)%s" % (
                       " (default: the bundle's client_cert.pem, if there is one)" if bundle else ""))
    t.add_argument("--client-key", type=user_path_text, default=None, metavar="PEM",
                   help="the client certificate's private key%s" % (
                       " (default: the bundle's client_key.pem)" if bundle else ""))
    t.add_argument("--client-key-password-file", type=user_path_text, default=None, metavar="PATH",
                   help="file holding the password of an encrypted client key (or set %s; never a flag)"
                   % CLIENT_KEY_PASSWORD_ENV)
    t.add_argument("--pin-sha256", type=_pins, action="append", default=None, metavar="BASE64",
                   help="also require the server's public key to have this pin (base64 SHA-256 of its "
                   "SubjectPublicKeyInfo, as curl's --pinnedpubkey sha256//...; repeatable, or ';'-separated); "
                   "--verbose prints the server's pin")


def tls_settings(ns: argparse.Namespace, bundle: bool = True) -> TLSSettings:
    """``bundle``: a lone --client-key pairs with the bundle's client_cert.pem; without a bundle it is an error."""
    if ns.client_key is not None and ns.client_cert is None and not bundle:
        raise UsageError("--client-key needs --client-cert")
    return TLSSettings(client_cert=ns.client_cert, client_key=ns.client_key,
                       client_key_password_file=ns.client_key_password_file,
                       pins=tuple(pin for group in (ns.pin_sha256 or []) for pin in group))


def client_key_password(t: TLSSettings, environ: Mapping[str, str], warnings: List[str]) -> Optional[bytes]:
    """An encrypted key's password from --client-key-password-file, else the environment; never argv."""
    from .bundle import key_permission_warning, read_secret_file
    from .tlsctx import CLIENT_KEY_PASSWORD_ENV

    if t.client_key_password_file is not None:
        warning = key_permission_warning(t.client_key_password_file)  # world-writable: refused
        if warning:
            warnings.append(warning)
        return read_secret_file(t.client_key_password_file, "client key password file")
    value = environ.get(CLIENT_KEY_PASSWORD_ENV, "")
    return value.encode("utf-8") if value else None


def refuse_tls_flags_over_http(target: Target, t: TLSSettings) -> None:
    """A pin or a client certificate asked for on a plain http:// URL would be silently unused: exit 2."""
    if target.scheme != "https" and (t.pins or t.client_cert):
        raise UsageError("--pin-sha256 and --client-cert need an https:// URL")


def make_ssl_context(ca_file: Optional[Union[str, Path]], t: TLSSettings, client_cert: Optional[Union[str, Path]],
                     client_key: Optional[Union[str, Path]],
                     reporter: Reporter, secrets: List[str],
                     environ: Optional[Mapping[str, str]] = None) -> "ssl.SSLContext":
    """The verifying client context with the client certificate and pins; a bad file fails here, before
    anything is sent. With --verbose, each handshake prints the server key's pin (curl's form)."""
    from .output import write_line
    from .tlsctx import build_ssl_context

    password = None
    if client_cert is not None:
        warnings: List[str] = []
        password = client_key_password(t, os.environ if environ is None else environ, warnings)
        for warning in warnings:
            reporter.warn(warning)
        if password:
            secrets.append(password.decode("utf-8", "replace"))  # redacted from here on
    ctx = build_ssl_context(ca_file, client_cert, client_key, password=password, pins=t.pins)
    if reporter.verbose:
        from .tlsctx import expiry_day

        trust = ca_file if ca_file is not None else "the system's trust store (the bundle has no ca-chain.pem)"
        # A bundle's CA expires too: say when, so a renewal is not a surprise (the system store's are many).
        days = sorted(expiry_day(c["notAfter"]) for c in ctx.get_ca_certs() if "notAfter" in c) if ca_file else []
        expires = " (CA expires %s)" % ", ".join(days) if days else ""
        write_line(reporter.stderr, reporter.redact("* trusting: %s%s\n" % (trust, expires)))

        def show(pin: str, version: str, not_after: Optional[str] = None) -> None:
            line = "* %s; server public key pin: sha256//%s%s%s" % (
                version, pin, " (matches --pin-sha256)" if t.pins else "",
                "; server certificate expires %s" % expiry_day(not_after) if not_after else "")
            write_line(reporter.stderr, reporter.redact(line) + "\n")  # a closed pipe must not fail the send

        ctx.on_connect = show
    return ctx


def common_settings(ns: argparse.Namespace, environ: Optional[dict] = None) -> CommonSettings:
    env = os.environ if environ is None else environ
    spool = ns.spool
    if spool is None and env.get(SPOOL_ENV, "").strip():
        spool = user_path(env[SPOOL_ENV].strip())
    if ns.quiet and ns.verbose:
        raise UsageError("--quiet and --verbose cannot be used together")
    spool_only = (ns.flush_spool or ns.spool_status or ns.dead_letters or ns.spool_max
                  or ns.spool_drop is not None or ns.spool_requeue is not None)
    if spool_only and spool is None:
        raise UsageError("--flush-spool, --spool-status, --dead-letters, --spool-drop, --spool-requeue and "
                         "--spool-max need --spool PATH (or %s)" % SPOOL_ENV)
    if ns.period > 0 and ns.interval <= 0:
        raise UsageError("--period needs an --interval above 0")
    if ns.dry_run and ns.flush_spool:
        raise UsageError("--dry-run shows new payloads; to see what --flush-spool would send use --spool-status")
    return CommonSettings(
        timeout=ns.timeout,
        interval=ns.interval,
        count=ns.count,
        period_min=ns.period,
        dry_run=ns.dry_run,
        output="json" if ns.json else "quiet" if ns.quiet else "text",
        verbose=ns.verbose,
        allow_http=ns.allow_http,
        retries=ns.retries,
        max_retry_time=ns.max_retry_time,
        retry_backoff=ns.retry_backoff,
        spool=spool,
        spool_max=ns.spool_max,
        flush_spool=ns.flush_spool,
        spool_status=ns.spool_status,
        dead_letters=ns.dead_letters,
        seed=ns.seed,
        spool_drop=ns.spool_drop,
        spool_requeue=ns.spool_requeue,
        dead_letter_after=ns.dead_letter_after,
        proxy=ns.proxy,
        noproxy=ns.noproxy,
        timestamps=ns.timestamps,
        jitter=ns.jitter,
        batch_size=ns.batch_size,
    )


def is_spool_command(s: CommonSettings) -> bool:
    """The spool maintenance flags: they read or change the spool and contact nothing."""
    return s.spool_status or s.dead_letters or s.spool_drop is not None or s.spool_requeue is not None


def make_reporter(prog: str, s: CommonSettings, env: Environment, secrets: List[str]) -> Reporter:
    if s.output == "json":
        from .console import lf_line_endings

        lf_line_endings(env.stdout)  # JSON Lines end in \n on Windows too, not the console's \r\n
    return Reporter(prog, env.stdout, env.stderr, mode=s.output, verbose=s.verbose, secrets=secrets,
                    timestamps=s.timestamps, clock=env.wall)


def spool_report(s: CommonSettings, reporter: Reporter, env: Environment) -> int:
    """--spool-status, --dead-letters, --spool-drop ID, --spool-requeue ID; contacts nothing."""
    from .spool import empty_status, open_spool

    changing = s.spool_drop is not None or s.spool_requeue is not None
    if not s.spool.exists():
        if changing:
            raise _unknown_spool_id(s)
        if s.spool_status:
            _print_status(empty_status(s.spool, env.wall()), reporter, s.output)
        return 0
    spool = open_spool(s.spool)
    try:
        for warning in spool.warnings:
            reporter.warn(warning, loud=True)
        if changing:
            _change_spool(spool, s, reporter, env)
        elif s.dead_letters:
            for row in spool.dead_letters():
                reporter.json_line(row)
        else:
            _print_status(spool.status(env.wall()), reporter, s.output)
        return 0
    finally:
        spool.close()


def _unknown_spool_id(s: CommonSettings) -> InputDataError:
    if s.spool_drop is not None:
        return InputDataError("no pending payload with id %d in spool %s" % (s.spool_drop, s.spool),
                              hint="--spool-status lists the failing payloads with their ids; "
                              "a dead letter is requeued (--spool-requeue), not dropped")
    return InputDataError("no dead letter with id %d in spool %s" % (s.spool_requeue, s.spool),
                          hint="--dead-letters lists the dead letters with their ids")


def _change_spool(spool, s: CommonSettings, reporter: Reporter, env: Environment) -> None:
    """--spool-drop / --spool-requeue: one change, one line saying what was done."""
    if s.spool_drop is not None:
        done, event, item_id = spool.drop(s.spool_drop, env.wall()), "spool_drop", s.spool_drop
        line = "dropped pending payload %d from spool %s" % (item_id, s.spool)
    else:
        done, event, item_id = spool.requeue(s.spool_requeue, env.wall()), "spool_requeue", s.spool_requeue
        line = "requeued dead letter %d in spool %s: the next run sends it" % (item_id, s.spool)
    if not done:
        raise _unknown_spool_id(s)
    if s.output == "json":
        reporter.json_line({"event": event, "id": item_id, "spool": str(s.spool)})
    else:
        reporter.info(line)


def _status_text(value) -> str:
    """One status value as a person reads it: "-" for nothing, lists and objects on one line."""
    if value is None or value == [] or value == {}:
        return "-"
    if isinstance(value, list):
        return "; ".join(_status_text(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"message", "at"}:  # last_error
            return "%s (at %s)" % (value["message"], value["at"]) if value["at"] else value["message"]
        if set(value) == {"file", "payloads"}:  # a moved-aside file
            held = "unreadable" if value["payloads"] is None else "%d payload(s)" % value["payloads"]
            return "%s (%s)" % (value["file"], held)
        if "failed_runs" in value:  # a failing payload
            last = value["last_error"] or "-"
            if value["last_status"]:
                last = "%s %s" % (value["last_status"], last)
            return "id %d: %d attempt(s), %d failed run(s), last: %s" % (
                value["id"], value["attempts"], value["failed_runs"], last)
        return ", ".join("%s=%s" % (k, "-" if v is None else v) for k, v in sorted(value.items()))
    return str(value)


def _print_status(status: dict, reporter: Reporter, output: str) -> None:
    if output == "json":
        reporter.json_line(dict({"event": "spool_status"}, **status))
        return
    for name, value in status.items():
        reporter.info("%s: %s" % (name, _status_text(value)))


def backlog_line(count: int, oldest_age_s: float) -> str:
    """One line for a cron log: a backlog went out after an outage, and how long it had waited."""
    return "delivered a backlog of %d payload(s); the oldest had waited %s" % (count, human_age(oldest_age_s))


def human_age(seconds: float) -> str:
    """3 s, 12 min, 5 h 3 min, 2 d 4 h: coarse enough to read at a glance."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return "%d s" % seconds
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return "%d min" % minutes
    if days < 1:
        return "%d h %d min" % (hours, minutes % 60)
    return "%d d %d h" % (days, hours % 24)


def refuse_batches(platform_name: str, batch_size: int, why: str) -> None:
    """--batch-size above 1 for a platform that documents no batch endpoint: a usage error (2), not a
    silent one-by-one run, so the flag never seems to work where it cannot."""
    if batch_size > 1:
        raise UsageError("--batch-size %d: %s" % (batch_size, why),
                         hint="leave out --batch-size (or give 1) for %s" % platform_name)


def dry_run(reporter: Reporter, profile: Profile, creds: Credentials, target: Target,
            make_bodies: Callable[[Environment], Bodies], env: Environment, batch_size: int = 1) -> int:
    """Print each request a run would make; with batch_size > 1 the batch requests a burst would make."""
    code = ExitStatus.OK
    produced = 0
    gathered: List[Tuple[int, bytes, str]] = []

    def show_batch() -> None:
        if len(gathered) == 1:
            seq, body, key = gathered[0]
            headers = [("User-Agent", USER_AGENT)] + profile.headers(body, key, creds)
            reporter.dry_run(seq, "POST", target.url, headers, body)
        elif gathered:
            from .batches import batch_body, batch_key, batch_path

            keys = [key for _, _, key in gathered]
            body = batch_body([b for _, b, _ in gathered], keys)
            headers = [("User-Agent", USER_AGENT)] + profile.headers(body, batch_key(keys), creds)
            reporter.dry_run(gathered[0][0], "POST", target._replace(path=batch_path(target.path)).url, headers, body)
        del gathered[:]

    if batch_size > 1:
        from .batches import Gatherer

        gatherer = Gatherer(batch_size, show_batch, env.monotonic)
        # A burst's batch is shown before the schedule waits, as a real run sends it then.
        env = Environment(stdin=env.stdin, stdout=env.stdout, stderr=env.stderr, monotonic=env.monotonic,
                          wall=env.wall, sleep=gatherer.sleep_after_flush(env.sleep), rand=env.rand)
    for seq, body in enumerate(make_bodies(env), 1):
        if isinstance(body, InputDataError):
            reporter.error(body.message, body.hint)
            code = ExitStatus.DATA
            continue
        produced += 1
        gathered.append((seq, body, new_idempotency_key()))
        if batch_size > 1:
            gatherer.add()
        else:
            show_batch()
    show_batch()
    if not produced and code is ExitStatus.OK:  # as a real run: an input without a reading is 65
        raise InputDataError("the input held no reading, so nothing would be sent",
                             hint="check what feeds the input (a dead sensor prints nothing)")
    return int(code)


def dry_run_environment(env: Environment) -> Environment:
    """Dry runs use simulated time: timestamps show the real schedule, nothing waits."""
    sim = SimulatedClock(env.wall())
    return Environment(stdin=env.stdin, stdout=env.stdout, stderr=env.stderr,
                       monotonic=sim.monotonic, wall=sim.wall, sleep=sim.sleep, rand=env.rand)


def wait_jitter(jitter: float, reporter: Reporter, env: Environment) -> None:
    """--jitter: sleep a random share of ``jitter`` seconds (env.rand, env.sleep: injectable, no wait in tests)."""
    if jitter <= 0:
        return
    delay = env.rand() * jitter
    reporter.waiting(delay, "--jitter")
    env.sleep(delay)


def send_all(s: CommonSettings, profile: Profile, creds: Credentials, target: Target,
             ca_file: Optional[Union[str, Path]],
             make_bodies: Callable[[Environment], Bodies], reporter: Reporter, env: Environment,
             ssl_context: Optional[ssl.SSLContext], gather: bool = True) -> int:
    """Open the spool and the connection, run the sender, print the summary, raise the final error.

    With --dry-run: print what would be sent, on a simulated clock, and contact nothing. With
    --batch-size above 1, ``gather``: new payloads made without a wait between them (a burst) are
    gathered into batches; False for a live stream (stdin), whose readings go as they arrive.
    """
    if s.dry_run:
        simulated = dry_run_environment(env)
        wait_jitter(s.jitter, reporter, simulated)  # on the simulated clock: timestamps show it, nothing waits
        return dry_run(reporter, profile, creds, target, make_bodies, simulated, s.batch_size if gather else 1)
    wait_jitter(s.jitter, reporter, env)
    from .delivery import Sender
    from .transport import Transport

    if s.spool is not None:
        from .spool import open_spool

        # A claim must outlive one payload's worst case: every attempt timing out, plus backoff.
        lease = s.max_retry_time + s.timeout * (s.retries + 2) * 2 + 60
        spool = open_spool(s.spool, max_items=s.spool_max, lease=lease)
        for warning in spool.warnings:
            reporter.warn(warning, loud=True)
    else:
        from .memory_spool import MemorySpool

        spool = MemorySpool()
    transport = Transport(target, ssl_context, s.timeout, cafile=ca_file, proxy=s.proxy, noproxy=s.noproxy)
    retry = RetryPolicy(total=s.retries, max_time=s.max_retry_time, backoff_base=s.retry_backoff)
    batch_path = None
    if s.batch_size > 1:
        from .batches import batch_path as batch_path_of

        batch_path = batch_path_of(target.path)
    sender = Sender(transport, profile, creds, spool, retry, reporter, env, dead_letter_after=s.dead_letter_after,
                    batch_size=s.batch_size, batch_path=batch_path)
    body_env = env
    if s.batch_size > 1 and gather and not s.flush_spool:
        from .batches import Gatherer

        sender.gatherer = Gatherer(s.batch_size, sender.drain, env.monotonic, stopped=lambda: sender.stopped)
        body_env = Environment(stdin=env.stdin, stdout=env.stdout, stderr=env.stderr, monotonic=env.monotonic,
                               wall=env.wall, sleep=sender.gatherer.sleep_after_flush(env.sleep), rand=env.rand)
    started = env.monotonic()
    bodies: Optional[Bodies] = None if s.flush_spool else make_bodies(body_env)
    try:
        try:
            result = sender.run(bodies, new_idempotency_key)
        except Interrupted as exc:
            sender.code = exc.exit_code
            reporter.summary(sender.summary_fields(env.monotonic() - started))
            raise
        finally:
            transport.close()
        fields = sender.summary_fields(env.monotonic() - started)
        reporter.summary(fields)
        if s.output == "quiet" and fields["backlog_delivered"]:
            reporter.notice(backlog_line(fields["backlog_delivered"], fields["backlog_oldest_age_s"] or 0.0))
    finally:
        spool.close()
    if result.error is not None and result.exit_code != ExitStatus.OK:
        raise result.error
    return int(result.exit_code)
