"""``iotpost smoke``: a CI verdict on a platform: health, credentials, send, read back, compare.

Usage: ``iotpost smoke --certs-dir DIR [--platform P] [--count N] [--deadline S] [--json] [--junit-xml PATH]``

Steps run in order and the first failure stops the run; its exit code (one table, exitcodes.py)
is the run's. A step the platform has no way to do is *skipped*, never passed. Whatever happens,
a usage error or a missing bundle included, the verdict is printed (``--json``) and the JUnit file
written, so a pipeline always has a report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .argparser import ArgumentParser
from .errors import IotPostError, TransientError, UsageError
from .exitcodes import ExitStatus
from .smoke import ReadbackRules, differences, find_marked, marked, new_run_id
from .smoke_report import FAILED, PASSED, SKIPPED, Reading, Step, Verdict, verdict_json, write_junit
from .user_paths import user_path
from .records import Record

PROG = "iotpost smoke"
PLATFORMS = ("tesaiot", "iotflow", "connectivity", "thermacore", "tlink")
Json = Dict[str, Any]


class StopSmoke(Exception):
    """A step failed: the run stops there (the step is already in the verdict)."""


class SmokeSettings(Record):
    certs_dir: Optional[Path]
    platform: Optional[str]
    base_url: Optional[str]
    ca_file: Optional[Path]
    count: int
    deadline: float
    output: str  # text | json
    junit_xml: Optional[Path]
    allow_http: bool
    timeout: float
    verbose: bool
    data: Optional[str]
    metadata: Optional[str]
    unit: Optional[str]
    sensor_type: Optional[str]
    hours: int
    credentials_file: Optional[Path]
    url: Optional[str] = None  # TLINK: the webhook URL (tlink_smoke)
    secret_file: Optional[Path] = None
    device_id: int = 2864


def _positive(kind: Callable[[str], Any], high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text) from None
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError("%r must be above 0 and at most %g" % (text, high))
        return value

    return parse


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Check a platform end to end for CI: health, credentials, send marked readings, read them "
        "back and compare; always leaves a verdict (--json, --junit-xml).",
        epilog="exit codes: 0 every step passed or was skipped, 2 usage, 65 a reading missing or altered, 66 "
        "credential file missing, 75 platform down or too slow, 77 credentials refused, 78 configuration or TLS.",
    )
    p.add_argument("--certs-dir", type=user_path, default=None, metavar="DIR",
                   help="the device's bundle (as iotpost send; default: $IOTPOST_CERTS_DIR, else certs_credentials/)")
    p.add_argument("--platform", choices=PLATFORMS, default=None,
                   help="default: the bundle's endpoints.json \"platform\", else tesaiot")
    p.add_argument("--base-url", default=None, metavar="URL", help="the platform's base URL (default: the bundle's)")
    p.add_argument("--ca-file", type=user_path, default=None, metavar="PEM",
                   help="CA that verifies the server (default: the bundle's ca-chain.pem)")
    p.add_argument("--count", type=_positive(int, 1000), default=3, metavar="N", help="readings to send (default: 3)")
    p.add_argument("--deadline", type=_positive(float, 3600), default=30.0, metavar="SECONDS",
                   help="for the whole run; read-back polls until then (default: 30)")
    p.add_argument("--data", default=None, metavar="JSON",
                   help="the reading each payload carries besides its marker (default: temperature and humidity)")
    p.add_argument("--metadata", default=None, metavar="JSON", help="metadata for each payload (iotflow, connectivity)")
    p.add_argument("--json", action="store_true", help="print the verdict as one JSON object on stdout")
    p.add_argument("--junit-xml", type=user_path, default=None, metavar="PATH",
                   help="write a JUnit XML report: one test case per step and per reading")
    p.add_argument("--allow-http", action="store_true", help="permit a plain http:// URL to this machine only")
    p.add_argument("--timeout", type=_positive(float, 3600), default=10.0, metavar="SECONDS",
                   help="network timeout per request (default: 10)")
    p.add_argument("--verbose", action="store_true", help="also print each request on stderr (secrets redacted)")
    t = p.add_argument_group("ThermaCore (read side only)")
    t.add_argument("--unit", default=None, metavar="ID", help="the unit whose readings are checked")
    t.add_argument("--sensor-type", default=None, metavar="TYPE", help="only this sensor type")
    t.add_argument("--hours", type=_positive(int, 8760), default=1, metavar="H",
                   help="the newest reading must be at most this old (default: 1)")
    t.add_argument("--credentials-file", type=user_path, default=None, metavar="PATH",
                   help="JSON {\"username\", \"password\"} (or THERMACORE_USERNAME / THERMACORE_PASSWORD)")
    k = p.add_argument_group("TLINK (a signed push, read back from the reference receiver's read API)")
    k.add_argument("--url", default=None, metavar="URL",
                   help="the webhook URL (or --base-url, or $TLINK_WEBHOOK_URL; default: the local twin)")
    k.add_argument("--secret-file", type=user_path, default=None, metavar="PATH",
                   help="file holding the webhook's HMAC secret (or $TLINK_WEBHOOK_SECRET; never a flag)")
    k.add_argument("--device-id", type=_positive(int, 2 ** 63 - 1), default=2864, metavar="N",
                   help="TLINK deviceId the smoke pushes as (default: 2864)")
    return p


def settings_from_args(argv: List[str], prog: str = PROG) -> SmokeSettings:
    ns = build_parser(prog).parse_args(argv)
    return SmokeSettings(certs_dir=ns.certs_dir, platform=ns.platform, base_url=ns.base_url, ca_file=ns.ca_file,
                         count=ns.count, deadline=ns.deadline, output="json" if ns.json else "text",
                         junit_xml=ns.junit_xml, allow_http=ns.allow_http, timeout=ns.timeout, verbose=ns.verbose,
                         data=ns.data, metadata=ns.metadata, unit=ns.unit, sensor_type=ns.sensor_type,
                         hours=ns.hours, credentials_file=ns.credentials_file, url=ns.url,
                         secret_file=ns.secret_file, device_id=ns.device_id)


def _prescan(argv: List[str]) -> Tuple[Optional[Path], bool, Optional[str]]:
    """--junit-xml, --json and --platform read before parsing, so a usage error still leaves its reports."""
    junit, platform = None, None
    for i, arg in enumerate(argv):
        for name in ("--junit-xml", "--platform"):
            value = None
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
            if value is not None and name == "--junit-xml":
                junit = user_path(value)
            elif value is not None and value in PLATFORMS:
                platform = value
    return junit, "--json" in argv, platform


class Run:
    """One smoke run: the steps, each timed and recorded in the verdict."""

    def __init__(self, verdict: Verdict, reporter, deadline: float) -> None:
        self.verdict = verdict
        self.out = reporter
        self.deadline = deadline  # time.monotonic() by which the whole run must be done
        self.certs_dir: Path = Path("certs_credentials")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def step(self, name: str, body: Callable[[], str]) -> None:
        """Run ``body`` (returns the step's message); an IotPostError fails the step and stops the run."""
        started = time.monotonic()
        try:
            message = body()
        except IotPostError as exc:
            self.fail(name, time.monotonic() - started, exc)
            raise StopSmoke() from None
        self.record(Step(name, PASSED, time.monotonic() - started, message))

    def skip(self, name: str, why: str) -> None:
        self.record(Step(name, SKIPPED, 0.0, why))

    def fail(self, name: str, seconds: float, exc: IotPostError) -> None:
        message = exc.message + ("; hint: " + exc.hint if exc.hint else "")
        self.record(Step(name, FAILED, seconds, message, int(exc.exit_code)))
        self.verdict.exit_code = int(exc.exit_code)

    def record(self, step: Step) -> None:
        self.verdict.steps.append(step)
        if self.out.mode == "text":
            more = (" (exit %d)" % step.exit_code) if step.exit_code is not None else ""
            self.out.info("%-12s %-7s %6.3f s  %s%s" % (step.name, step.status, step.seconds, step.message, more))


def _stamp(after: Optional[str] = None) -> str:
    """Now, ISO 8601 UTC at millisecond resolution (what IoTFlow keeps), and later than ``after``: IoTFlow
    keeps one reading per device and millisecond, so two smoke readings must never share one."""
    import datetime as _dt

    while True:
        now = _dt.datetime.now(_dt.timezone.utc)
        stamp = now.replace(microsecond=now.microsecond // 1000 * 1000).isoformat(timespec="milliseconds")
        if after is None or stamp > after:  # same format and zone: text order is time order
            return stamp
        time.sleep(0.001)


def _json_object(text: Optional[str], flag: str, allow_empty: bool = False) -> Optional[Json]:
    """A flag's JSON object, as strict as iotpost send's (no NaN, encodable, not absurdly deep); else 2."""
    if text is None:
        return None
    from .data_input import json_object_arg

    value = json_object_arg(text, flag)
    if not value and not allow_empty:
        raise UsageError("%s must be a non-empty JSON object" % flag)
    return value


def _smoke_device(run: Run, s: SmokeSettings, platform_name: str, secrets: List[str]) -> None:
    """TESAIoT, IoTFlow, Connectivity: health, authenticate, send, read back."""
    from .bundle import load_bundle
    from .device_api import DeviceCall
    from .platforms import load
    from .profiles import Credentials

    platform = load(platform_name)
    base_data = _json_object(s.data, "--data") or {"temperature": 21.5, "humidity": 40}
    metadata = _json_object(s.metadata, "--metadata", allow_empty=True)
    if metadata is not None and not platform.takes_metadata:
        raise UsageError("--metadata is not part of %s's telemetry contract" % platform.name)
    bundle = load_bundle(run.certs_dir, base_url=s.base_url, ca_file=s.ca_file,
                         device_id_parser=None if platform.name == "tesaiot" else platform.parse_device_id,
                         public_ca=platform.public_ca)
    if bundle.api_key:
        secrets.append(bundle.api_key)
    for warning in bundle.warnings:
        run.out.warn(warning)
    key_header = platform.profile.auth(b"", Credentials(api_key=bundle.api_key))

    def call(path: str) -> "DeviceCall":
        return DeviceCall.open(platform, bundle.base_url, path, allow_http=s.allow_http, ca_file=bundle.ca_file,
                               reporter=run.out, timeout=min(s.timeout, max(run.left(), 0.5)))

    if platform.health_path:
        def health() -> str:
            response, doc = call(platform.health_path).json("GET", [], b"", "checking the platform's health")
            return "%d %s" % (response.status, (doc or {}).get("status", ""))

        run.step("health", health)
    else:
        run.skip("health", "%s documents no health check" % platform.name)
    if platform.status_path:
        def authenticate() -> str:
            response, doc = call(platform.status_path).json("GET", key_header, b"",
                                                            "proving the API key with the device status")
            device = (doc or {}).get("device")
            return "%d, the key is device %s's" % (response.status,
                                                  device.get("id", "?") if isinstance(device, dict) else "?")

        run.step("authenticate", authenticate)
    else:
        run.skip("authenticate", "%s has no call that proves a key without storing a reading" % platform.name)
    sent: List[Tuple[int, Json, str, Optional[Json]]] = []  # seq, data, timestamp, metadata as the body held them

    def send() -> str:
        from .payloads import encode, new_idempotency_key

        target_call = call(platform.profile.endpoint)
        for seq in range(1, s.count + 1):
            data = marked(base_data, run.verdict.run_id, seq)
            stamp = _stamp(after=sent[-1][2] if sent else None)
            payload = platform.make_body(bundle.device_id, data, metadata, stamp)
            body = encode(payload)
            headers = platform.profile.headers(body, new_idempotency_key(), Credentials(api_key=bundle.api_key))
            response, doc = _post_with_retry(target_call, run, headers, body, "sending smoke reading %d" % seq)
            answer_id = None
            if doc:
                answer_id = doc.get("telemetry_id") or doc.get("id")
            sent.append((seq, data, stamp, payload.get("metadata")))
            run.verdict.readings.append(Reading(seq, "%s/%d" % (run.verdict.run_id, seq), SKIPPED,
                                                str(answer_id) if answer_id is not None else None, stamp,
                                                "sent: %d" % response.status))
        return "%d reading(s) accepted" % len(sent)

    run.step("send", send)
    if platform.history_path is None or platform.readback_rules is None:
        run.skip("read_back", "%s documents no read API for a device" % platform.name)
        return
    rules: ReadbackRules = platform.readback_rules

    def read_back() -> str:
        path = platform.history_path(bundle.device_id) + "?" + platform.readback_query
        found: Dict[int, Json] = {}
        while True:
            _, doc = call(path).json("GET", key_header, b"", "reading the readings back")
            records = (doc or {}).get(platform.readback_records) or []
            found = find_marked(records if isinstance(records, list) else [], run.verdict.run_id, rules)
            if len(found) >= len(sent) or run.left() <= 0:
                break
            time.sleep(min(0.5, max(run.left(), 0.0)))
        return _judge(run, sent, found, rules)

    run.step("read_back", read_back)


def _post_with_retry(target_call, run: Run, headers, body: bytes, doing: str):
    """One POST; a 429/503 is waited out (Retry-After, or IoTFlow's retry_after in the body) within the deadline."""
    from .device_api import retry_after_of

    while True:
        response, doc = target_call.json("POST", headers, body, doing, ok_statuses=(429, 503))
        if response.status not in (429, 503):
            return response, doc
        wait = retry_after_of(response)
        wait = 1.0 if wait is None else wait
        if wait >= run.left():
            raise TransientError("the platform kept answering %d past the deadline, while %s" % (response.status, doing),
                                 hint="give the run more --deadline, or run it when the platform is less busy")
        time.sleep(wait)


def _judge(run: Run, sent: List[Tuple[int, Json, str, Optional[Json]]], found: Dict[int, Json],
           rules: ReadbackRules) -> str:
    """Each reading passed (as sent), missing or altered; a failure anywhere fails the step with 65."""
    missing, altered = [], []
    readings = {r.seq: r for r in run.verdict.readings}
    for seq, data, stamp, metadata in sent:
        record = found.get(seq)
        if record is None:
            missing.append(seq)
            readings[seq] = readings[seq]._replace(status=FAILED, message="never appeared before the deadline")
            continue
        diffs = differences(data, metadata, stamp, record, rules)
        if diffs:
            altered.append(seq)
            readings[seq] = readings[seq]._replace(status=FAILED, message="came back altered", differences=diffs)
        else:
            readings[seq] = readings[seq]._replace(status=PASSED, message="read back as sent")
    run.verdict.readings = [readings[seq] for seq in sorted(readings)]
    if missing or altered:
        parts = []
        if missing:
            parts.append("%d missing (%s)" % (len(missing), ", ".join("#%d" % n for n in missing)))
        if altered:
            parts.append("%d altered (%s)" % (len(altered), ", ".join("#%d" % n for n in altered)))
        err = IotPostError("%d of %d reading(s) not read back as sent: %s" % (len(missing) + len(altered), len(sent),
                                                                             "; ".join(parts)),
                           hint="the platform acknowledged what it did not keep as sent: see each reading's "
                           "differences in the report")
        err.exit_code = ExitStatus.DATA
        raise err
    return "%d of %d reading(s) read back as sent" % (len(sent), len(sent))


def _smoke_thermacore(run: Run, s: SmokeSettings, secrets: List[str]) -> None:
    """ThermaCore is read-only for a device: health, login, and the unit's newest reading is recent and GOOD."""
    from .thermacore_smoke import smoke_thermacore

    smoke_thermacore(run, s, secrets)


def _main(argv: List[str], secrets: List[str], prog: str = PROG) -> int:
    from .console import protect_std_streams
    from .environment import Environment
    from .output import Reporter

    protect_std_streams()
    junit, json_mode, platform_hint = _prescan(argv)
    verdict = Verdict(platform_hint or "unknown", new_run_id(), time.time())
    env = Environment()
    reporter = Reporter(prog, env.stdout, env.stderr, mode="json" if json_mode else "text",
                        verbose="--verbose" in argv, secrets=secrets)
    reporter.warn = _once(reporter.warn)  # each request opens its own connection: say a thing once per run
    run = Run(verdict, reporter, time.monotonic() + 30.0)
    error: Optional[BaseException] = None
    try:
        try:
            s = settings_from_args(argv, prog)
        except SystemExit as exc:  # argparse printed the usage error; the verdict says so too
            code = exc.code if isinstance(exc.code, int) else 2
            if code == 0:  # --help or --version: no run, so no verdict
                junit = None
                reporter = None
                return 0
            run.record(Step("preflight", FAILED, 0.0, "usage error (see stderr)", code))
            verdict.exit_code = code
            return code
        run.deadline = time.monotonic() + s.deadline
        from .bundle import bundle_platform, default_certs_dir

        run.certs_dir = s.certs_dir if s.certs_dir is not None else Path(default_certs_dir(
            Path(__file__).resolve().parent.parent))
        try:
            name = s.platform or bundle_platform(run.certs_dir) or "tesaiot"
        except IotPostError as exc:
            run.fail("preflight", 0.0, exc)
            raise StopSmoke() from None
        verdict.platform = name
        try:
            if name == "thermacore":
                _smoke_thermacore(run, s, secrets)
            elif name == "tlink":
                from .tlink_smoke import smoke_tlink

                smoke_tlink(run, s, secrets)
            else:
                _smoke_device(run, s, name, secrets)
        except IotPostError as exc:  # before the first step: the bundle, a flag, the CA file
            run.fail("preflight", 0.0, exc)
            raise StopSmoke() from None
        return verdict.exit_code
    except StopSmoke:
        return verdict.exit_code
    except BaseException as exc:  # Interrupted (130/143) or a bug: the report is still written
        error = exc
        raise
    finally:
        if error is not None and not verdict.exit_code:
            verdict.exit_code = int(getattr(error, "exit_code", ExitStatus.INTERNAL))
        if reporter is not None:
            _report(verdict, reporter, junit)


def _once(warn: Callable[..., None]) -> Callable[..., None]:
    seen = set()

    def warn_once(message: str, *args: Any, **kwargs: Any) -> None:
        if message not in seen:
            seen.add(message)
            warn(message, *args, **kwargs)

    return warn_once


def _report(verdict: Verdict, reporter, junit: Optional[Path]) -> None:
    if reporter.mode == "json":
        reporter.json_line(verdict_json(verdict))
    else:
        reporter.info("smoke %s: %s (exit %d)" % (verdict.platform, "passed" if verdict.passed else "FAILED",
                                                  verdict.exit_code))
    if junit is not None:
        try:
            write_junit(verdict, junit, reporter.redact)
        except OSError as exc:
            reporter.error("cannot write the JUnit report %s (%s)" % (junit, exc.strerror or exc))


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    from .cli_run import run

    return run(lambda args, secrets: _main(args, secrets, prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
