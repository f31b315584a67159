"""``iotpost smoke --platform thermacore``: ThermaCore is read-only for a device tool, so its smoke reads.

Steps: health (``GET /health``), authenticate (log in), readings (the unit has a reading within
``--hours`` and the newest is ``GOOD``); send and read back are skipped: ThermaCore's readings come
from its own collectors.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any, List

from .errors import IotPostError, UsageError
from .exitcodes import ExitStatus, for_http_status


def smoke_thermacore(run: Any, s: Any, secrets: List[str]) -> None:
    from .target import parse_target
    from .thermacore_cli import NAMES, load_credentials
    from .thermacore_client import HEALTH_PATH, ThermaCoreClient
    from .tlsctx import build_ssl_context
    from .transport import Transport

    if not s.base_url or not s.unit:
        raise UsageError("--platform thermacore needs --base-url URL and --unit ID")
    warnings: List[str] = []
    username, password = load_credentials(s.credentials_file, os.environ, warnings)
    secrets.append(password)
    for warning in warnings:
        run.out.warn(warning)
    target = parse_target(s.base_url, "", allow_http=s.allow_http, names=NAMES)
    ctx = build_ssl_context(s.ca_file) if target.scheme == "https" else None
    transport = Transport(target, ctx, s.timeout, cafile=s.ca_file)
    base = target.path.split("?", 1)[0].rstrip("/")
    client = ThermaCoreClient(transport, base, username, password, secrets,
                              on_request=lambda m, p, h, b: run.out.request(
                                  m, "%s://%s%s" % (target.scheme, target.netloc, p), h, b))
    try:
        def health() -> str:
            response = transport.send("GET", base + HEALTH_PATH, [("Accept", "application/json")], b"")
            if response.status != 200:
                code = for_http_status(response.status)
                err = IotPostError("GET /health answered %d %s" % (response.status, response.reason),
                                   hint="the platform is not healthy; retry later" if code is ExitStatus.TEMPFAIL
                                   else "check --base-url: is it the ThermaCore API?")
                err.exit_code = code if code is not ExitStatus.OK else ExitStatus.TEMPFAIL
                raise err
            return "200"

        run.step("health", health)

        def authenticate() -> str:
            client.login()
            return "logged in as %s" % username

        run.step("authenticate", authenticate)
        run.skip("send", "ThermaCore's readings come from its own collectors: a device tool only reads")
        run.skip("read_back", "nothing was sent")

        def readings() -> str:
            rows = client.readings(s.unit, hours=s.hours, sensor_type=s.sensor_type)
            rows = [r for r in rows if isinstance(r, dict)]
            what = "unit %s%s" % (s.unit, " (%s)" % s.sensor_type if s.sensor_type else "")
            if not rows:
                raise _data_error("%s has no reading in the last %d hour(s)" % (what, s.hours))
            newest = max(rows, key=lambda r: str(r.get("timestamp", "")))
            age = _age_seconds(newest.get("timestamp"))
            if age is None or age > s.hours * 3600:
                raise _data_error("%s's newest reading is older than %d hour(s) (%s)"
                                  % (what, s.hours, newest.get("timestamp")))
            if newest.get("quality") != "GOOD":
                raise _data_error("%s's newest reading has quality %s, not GOOD" % (what, newest.get("quality")))
            return "%d reading(s); the newest %s, GOOD, %.0f s old" % (len(rows), newest.get("timestamp"), age)

        run.step("readings", readings)
    finally:
        transport.close()


def _data_error(message: str) -> IotPostError:
    err = IotPostError(message, hint="the platform is up and the login works, but its collectors are not "
                                     "delivering: check the unit's sensors")
    err.exit_code = ExitStatus.DATA
    return err


def _age_seconds(stamp: Any) -> Any:
    """How old a ThermaCore timestamp (UTC, no zone) is, in seconds; None when it is not one."""
    from .payloads import parse_iso8601

    if not isinstance(stamp, str):
        return None
    try:
        moment = parse_iso8601(stamp.strip().replace(" ", "T", 1))
    except ValueError:
        return None
    return (_dt.datetime.now(_dt.timezone.utc) - moment).total_seconds()
