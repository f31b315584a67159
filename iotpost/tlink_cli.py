"""tlink_push.py: send TLINK push-protocol payloads to a webhook, HMAC-signed when a secret is set.

Usage: ``python3 tlink_push.py --url https://hooks.example.com/api/webhooks/tlink --secret-file s.txt``
``read-sensors | python3 tlink_push.py --data-file - --sensor 11922:1:°C:Room --spool /var/lib/tlink.db``

For teams exercising their TLINK webhook before pointing the TLINK cloud at it, pushing real
readings (--data-file), or replaying what TLINK sent (--replay). Every flag is checked against
the reference receiver's column limits (tlink_schema.LIMITS) before anything is sent. Same TLS rules,
exit codes, output modes, retries and spool as post_https_sample.py: both run through
iotpost.cli_common.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import IO, Iterator, List, Optional, Tuple, Union

from . import __version__
from .argparser import ArgumentParser
from .bundle import CA_FILE, default_certs_dir, key_permission_warning, read_secret_file
from .cli_common import (CommonSettings, TLSSettings, add_sending_arguments, add_tls_arguments, common_settings,
                         is_spool_command, make_reporter, make_ssl_context, refuse_batches, refuse_tls_flags_over_http,
                         send_all, spool_report, tls_settings)
from .cli_run import run
from .console import protect_std_streams
from .environment import Environment
from .errors import InputDataError, UsageError
from .profiles import TLINK, Credentials
from .schedule import paced
from .target import parse_target
from .tlink import (DEFAULT_SENSORS, DeviceInfo, SensorSpec, TlinkPushes, encode_push, limit_problem, load_replay,
                    make_push, parse_sensor, reading_entry, tlink_time)
from .tlink_input import TlinkLine, read_reading_lines
from .tlink_stamps import PushTimes
from .user_paths import path_join, user_path_or_stdin, user_path_text
from .records import Record

PROG = "tlink_push.py"
SCRIPT_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # no pathlib on the cold path
DEFAULT_URL = "https://localhost:8443" + TLINK.endpoint
URL_ENV = "TLINK_WEBHOOK_URL"
SECRET_ENV = "TLINK_WEBHOOK_SECRET"


class TlinkSettings(Record):
    url: str
    ca_file: str  # paths spelled as str(Path(...)): see user_paths
    secret_file: Optional[str]
    device: DeviceInfo
    sensors: Tuple[SensorSpec, ...]
    replay: Optional[str]
    data_file: Optional[str]
    common: CommonSettings
    tls: TLSSettings = TLSSettings()


def _sensor(text: str) -> SensorSpec:
    try:
        return parse_sensor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a whole number" % text) from None


# flag -> the receiver's field it fills, for checking against tlink_schema.LIMITS
_FLAG_FIELDS = (("--device-id", "device_id", "deviceId"), ("--user-id", "user_id", "deviceUserid"),
                ("--group-id", "group_id", "groupId"), ("--device-no", "device_no", "deviceNo"),
                ("--device-name", "device_name", "deviceName"), ("--parent-user-id", "parent_user_id", "parentUserId"),
                ("--lat", "lat", "lat"), ("--lng", "lng", "lng"), ("--product-id", "product_id", "productId"),
                ("--product-type", "product_type", "productType"),
                ("--protocol-label", "protocol_label", "protocolLabel"))


def _device_from_args(ns: argparse.Namespace) -> DeviceInfo:
    """The device flags, each checked against the receiver's limits (exit 2 naming flag, field and limit)."""
    for flag, attr, field in _FLAG_FIELDS:
        value = getattr(ns, attr)
        problem = limit_problem(field, value) if value is not None else None
        if problem:
            raise UsageError("%s: %s" % (flag, problem))
    for flag, attr in (("--lat", "lat"), ("--lng", "lng")):
        value = getattr(ns, attr)
        try:
            if value is not None:
                float(value)
        except ValueError:
            raise UsageError("%s %r is not a number of degrees" % (flag, value)) from None
    return DeviceInfo(ns.device_id, ns.user_id, ns.parent_user_id, device_no=ns.device_no or None,
                      device_name=ns.device_name, group_id=ns.group_id, lat=ns.lat, lng=ns.lng,
                      product_id=ns.product_id, product_type=ns.product_type, protocol_label=ns.protocol_label)


def _sensors_from_args(sensors: Optional[List[SensorSpec]]) -> Tuple[SensorSpec, ...]:
    if not sensors:
        return DEFAULT_SENSORS
    seen = set()
    for spec in sensors:
        if spec.sensor_id in seen:
            raise UsageError("--sensor %d is given twice; each sensor id may appear once" % spec.sensor_id)
        seen.add(spec.sensor_id)
    return tuple(sensors)


def build_parser(prog: str = PROG) -> ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Send TLINK push-protocol payloads to a webhook over verified HTTPS, signed with "
        "HMAC-SHA256 (X-TLink-Signature) when a secret is set.",
        epilog="secret: --secret-file PATH or the %s environment variable (never a flag). "
        "Exit codes as post_https_sample.py: 0 delivered, 2 usage or a flag over the receiver's limits, "
        "65 bad data line, replay file or rejected push, 75 retry later, 77 signature rejected, "
        "78 configuration/TLS." % SECRET_ENV,
    )
    p.add_argument("--version", action="version", version="%(prog)s (iotpost " + __version__ + ")")
    w = p.add_argument_group("webhook")
    where = w.add_mutually_exclusive_group()
    where.add_argument("--url", default=None, metavar="URL",
                       help="webhook URL (default: $%s, else the local twin %s)" % (URL_ENV, DEFAULT_URL))
    where.add_argument("--base-url", default=None, metavar="URL",
                       help="the receiver's base URL, as every iotpost command takes it: %s is appended"
                       % TLINK.endpoint)
    w.add_argument("--ca-file", type=user_path_text, default=None, metavar="PEM",
                   help="CA that verifies the webhook's server (default: the bundle's %s)" % CA_FILE)
    w.add_argument("--secret-file", type=user_path_text, default=None, metavar="PATH",
                   help="file holding the HMAC secret (or set %s); without one, pushes are unsigned" % SECRET_ENV)
    d = p.add_argument_group("push content")
    d.add_argument("--device-id", type=_number, default=2864, metavar="N", help="TLINK deviceId (default: 2864)")
    d.add_argument("--device-no", default=None, metavar="TEXT",
                   help="deviceNo, the device number the receiver keys the device on (default: 16 characters "
                   "derived from --device-id)")
    d.add_argument("--device-name", default=None, metavar="TEXT", help="deviceName (default: none)")
    d.add_argument("--user-id", type=_number, default=385, metavar="N", help="deviceUserid (default: 385)")
    d.add_argument("--parent-user-id", default="217", metavar="ID", help="parentUserId (default: 217)")
    d.add_argument("--group-id", type=_number, default=None, metavar="N", help="groupId (default: none)")
    d.add_argument("--lat", default=None, metavar="DEG", help="the device's latitude, lat (default: none)")
    d.add_argument("--lng", default=None, metavar="DEG", help="the device's longitude, lng (default: none)")
    d.add_argument("--product-id", default=None, metavar="TEXT", help="productId (default: none)")
    d.add_argument("--product-type", default=None, metavar="TEXT", help="productType (default: none)")
    d.add_argument("--protocol-label", default=None, metavar="TEXT", help="protocolLabel (default: none)")
    d.add_argument("--sensor", type=_sensor, action="append", default=None, metavar="ID[:TYPE[:UNIT[:NAME]]]",
                   help="a sensor to report, repeatable; TYPE is TLINK's sensorsTypeId (1 numeric, 2/5 switch, "
                   "3 location, 4 image, 6 level, 7 video, 8 string); NAME (sensorName) is the rest and may "
                   "hold ':'. Default: 11922:1:°C 11923:1:%%RH 11924:2")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--data-file", type=user_path_or_stdin, default=None, metavar="PATH",
                     help="real readings, JSON Lines, one push per line: {\"SENSOR_ID\": value, ..., "
                     "\"time\": \"YYYY-MM-DD HH:MM:SS\"} (time optional); '-' streams stdin line by line")
    src.add_argument("--replay", type=user_path_or_stdin, default=None, metavar="PATH",
                     help="send recorded pushes byte-for-byte: a JSON object or JSON Lines ('-' = stdin)")
    add_tls_arguments(p, bundle=False)
    add_sending_arguments(p)
    return p


def read_secret(path: Optional[str], environ: dict) -> Optional[bytes]:
    """The HMAC secret from a file (trailing newline stripped) or the environment; never from argv."""
    if path is not None:
        return read_secret_file(path, "webhook secret file")
    value = environ.get(SECRET_ENV, "").strip()
    return value.encode("utf-8") if value else None


def _from_base(base_url: Optional[str]) -> Optional[str]:
    """--base-url https://host:8443 -> https://host:8443/api/webhooks/tlink (the path every receiver uses)."""
    if base_url is None or not base_url.strip():
        return None
    return base_url.strip().rstrip("/") + TLINK.endpoint


def settings_from_args(argv: List[str], environ: Optional[dict] = None, prog: str = PROG) -> TlinkSettings:
    env = os.environ if environ is None else environ
    ns = build_parser(prog).parse_args(argv)
    common = common_settings(ns, env)
    refuse_batches("TLINK", common.batch_size, "a TLINK webhook takes one push per request (no batch endpoint "
                   "is documented)")
    if (ns.replay or ns.data_file) and common.flush_spool:
        raise UsageError("--flush-spool sends only what is spooled; it takes no --replay/--data-file")
    ca = ns.ca_file if ns.ca_file is not None else path_join(default_certs_dir(SCRIPT_DIR, env), CA_FILE)
    return TlinkSettings(
        url=ns.url or _from_base(ns.base_url) or env.get(URL_ENV, "").strip() or DEFAULT_URL,
        ca_file=ca,
        secret_file=ns.secret_file,
        device=_device_from_args(ns),
        sensors=_sensors_from_args(ns.sensor),
        replay=ns.replay,
        data_file=ns.data_file,
        common=common,
        tls=tls_settings(ns, bundle=False),
    )


def _read_replay(name: str, env: Environment) -> List[bytes]:
    if name == "-":
        stream = getattr(env.stdin, "buffer", None)
        data = stream.read() if stream is not None else env.stdin.read().encode("utf-8")
        return load_replay(data, "<stdin>")
    try:
        with open(name, "rb") as fh:
            return load_replay(fh.read(), name)
    except OSError as exc:
        raise InputDataError("replay file %s cannot be read (%s)" % (name, exc.strerror or exc)) from None


def _open_data_file(name: str, env: Environment) -> IO:
    """--data-file's stream, read as bytes line by line (one line of bad bytes must not end it)."""
    if name == "-":
        return getattr(env.stdin, "buffer", env.stdin)
    try:
        return open(name, "rb")
    except OSError as exc:
        raise InputDataError("data file %s cannot be read (%s)" % (name, exc.strerror or exc)) from None


def _open_ledger(c: CommonSettings):
    """The spool's record of each device's last push time, when there is a spool (never in a dry run)."""
    if c.spool is None or c.dry_run:
        return None
    from .spool import open_spool

    return open_spool(c.spool)


def _line_push(s: TlinkSettings, line: TlinkLine, times: PushTimes) -> bytes:
    """One --data-file line as a push: declared sensors keep their type, unit and name; others are numeric."""
    if line.time is not None:
        times.own(line.time, line.where)  # refuses (65) a time that repeats the previous push's
        stamp = line.time
    else:
        stamp = tlink_time(times.generated())
    declared = {spec.sensor_id: spec for spec in s.sensors}
    readings = []
    for sensor_id, value in line.values.items():
        spec = declared.get(sensor_id) or SensorSpec(sensor_id)
        online = value is not None  # null: the sensor is offline (isLine 0)
        readings.append(reading_entry(spec, stamp[11:], value or "", value or "", online=online))
    return encode_push(make_push(s.device, readings, stamp))


def body_source(s: TlinkSettings, replayed: Optional[List[bytes]], data_stream: Optional[IO]):
    """A factory of bodies for send_all: replayed pushes, --data-file lines, or generated pushes."""
    c = s.common

    def make(run_env: Environment) -> Iterator[Union[bytes, InputDataError]]:
        if replayed is not None:
            yield from replayed
            return
        ledger = _open_ledger(c)  # opened here, after send_all has opened (and if need be repaired) the spool
        times = PushTimes(s.device.device_id, run_env, ledger)
        try:
            if data_stream is not None:
                name = "<stdin>" if s.data_file == "-" else s.data_file
                for line in read_reading_lines(data_stream, name):
                    try:
                        yield line if isinstance(line, InputDataError) else _line_push(s, line, times)
                    except InputDataError as exc:
                        yield exc
                return
            gen = TlinkPushes(s.device, s.sensors, seed=c.seed)
            for _ in paced(c.count, c.interval, c.period_min * 60, run_env.monotonic, run_env.sleep):
                yield encode_push(gen.next(times.generated()))
        finally:
            if ledger is not None:
                ledger.close()
            if data_stream is not None and s.data_file != "-":
                data_stream.close()

    return make


def _main(argv: List[str], secrets: List[str], env: Optional[Environment] = None, prog: str = PROG) -> int:
    protect_std_streams()  # an ascii or cp874 console must not crash a run (argparse's help included)
    s = settings_from_args(argv, prog=prog)
    c = s.common
    env = env or Environment()
    reporter = make_reporter(prog, c, env, secrets)
    if is_spool_command(c):
        return spool_report(c, reporter, env)
    # A world-writable secret file is refused (78) before it is read; a readable one is warned about.
    warning = key_permission_warning(s.secret_file) if s.secret_file is not None else None
    secret = read_secret(s.secret_file, os.environ)
    if secret:
        secrets.append(secret.decode("utf-8", "replace"))  # the reporter redacts it from here on
    from .transport import proxy_secrets

    secrets.extend(proxy_secrets(c.proxy, os.environ))  # a proxy password, redacted the same way
    if warning:
        reporter.warn(warning)
    target = parse_target(s.url, "", allow_http=c.allow_http, names=TLINK.names)
    refuse_tls_flags_over_http(target, s.tls)
    ctx = None
    if target.scheme == "https":  # a bad CA file, client certificate or key fails here, before anything is sent
        key = s.tls.client_key if s.tls.client_cert is not None else None
        ctx = make_ssl_context(s.ca_file, s.tls, s.tls.client_cert, key, reporter, secrets)
    replayed = _read_replay(s.replay, env) if s.replay else None  # checked whole, before any send
    data_stream = _open_data_file(s.data_file, env) if s.data_file else None  # missing file: before any send
    if c.count > 1 and c.interval < 1 and replayed is None and data_stream is None and c.output != "quiet":
        reporter.warn("--interval under 1 s: TLINK stamps pushes to the second, so each push waits for a "
                      "second of its own")
    make = body_source(s, replayed, data_stream)
    creds = Credentials(hmac_secret=secret)
    return send_all(c, TLINK, creds, target, s.ca_file, make, reporter, env, ctx)


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    return run(lambda args, secrets: _main(args, secrets, prog=prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
