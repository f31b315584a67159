"""``iotpost smoke --platform tlink``: signed pushes to a TLINK webhook, read back from the reference's read API.

Usage: ``iotpost smoke --platform tlink --url https://hooks.example.com/api/webhooks/tlink --secret-file s.txt``

TLINK defines no health check and no call that proves a secret without storing: the webhook
checks a signature only on a push, so health and authenticate are skipped and a wrong secret
fails send (77). Each push carries the numeric sensor tlink_push.py sends by default and a string
sensor (TLINK type 8) whose value is this run's marker, ``smoke:<run id>:<seq>``: the reference
keeps a string value as sent and shows it in ``GET /api/devices?deviceId=N``, so the marker finds
the push again. The reference keeps one reading per sensor and second (PROTOCOLS.md "TLINK"), so
pushes take a second each (tlink_stamps.PushTimes), and the numeric reading is compared by the
push's ``time``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import IotPostError, TransientError, UsageError
from .exitcodes import ExitStatus, for_http_status
from .smoke import ReadbackRules
from .smoke_report import SKIPPED, Reading
from .tlink import (DEFAULT_SENSORS, STRING, DeviceInfo, SensorSpec, TlinkPushes, encode_push, limit_problem,
                    make_push, reading_entry)

Json = Dict[str, Any]
NUMERIC_SENSOR = DEFAULT_SENSORS[0]  # 11922, °C: what tlink_push.py sends first by default
MARKER_SENSOR = SensorSpec(11999, STRING, None, "iotpost smoke marker")
# The reference shows times as YYYY-MM-DDTHH:MM:SS, no zone, whole seconds: compared as such.
RULES = ReadbackRules(data_key="data", timestamp_key="time", timestamp_resolution_ms=1000, naive_is_utc=True)
READ_PATH = "/api/devices"


class SentPush(NamedTuple):
    seq: int
    time: str  # the push's time, YYYY-MM-DD HH:MM:SS (local, as TLINK stamps)
    data: Json  # the numeric entry's fields as sent: value, reVal, times


def marker_text(run_id: str, seq: int) -> str:
    return "smoke:%s:%d" % (run_id, seq)


def read_base(webhook_url: str) -> str:
    """The reference's base URL: the webhook URL without /api/webhooks/tlink (else its origin)."""
    from urllib.parse import urlsplit

    from .profiles import TLINK

    url = webhook_url.strip().split("?", 1)[0].split("#", 1)[0].rstrip("/")
    if url.endswith(TLINK.endpoint):
        return url[: -len(TLINK.endpoint)]
    parts = urlsplit(url)
    return "%s://%s" % (parts.scheme, parts.netloc)


def find_pushes(doc: Any, device_id: int, run_id: str) -> Dict[int, Json]:
    """seq -> a record for smoke.differences: the marked push's numeric reading (data) and its time.

    The marker's history entry gives the push's recordedAt and sensorTimestamp; the numeric
    sensor's entry with the same pair is that push's reading (absent: data without value).
    """
    devices = doc.get("devices") if isinstance(doc, dict) else None
    device = next((d for d in devices or [] if isinstance(d, dict) and str(d.get("deviceId")) == str(device_id)),
                  None)
    sensors = [s for s in (device or {}).get("sensors") or [] if isinstance(s, dict)]

    def history(sensor_id: int) -> List[Json]:
        for sensor in sensors:
            if str(sensor.get("sensorId")) == str(sensor_id) and isinstance(sensor.get("history"), list):
                return [h for h in sensor["history"] if isinstance(h, dict)]
        return []

    prefix = "smoke:%s:" % run_id
    numeric = history(NUMERIC_SENSOR.sensor_id)
    found: Dict[int, Json] = {}
    for entry in history(MARKER_SENSOR.sensor_id):
        value = entry.get("value")
        if not isinstance(value, str) or not value.startswith(prefix) or not value[len(prefix):].isdigit():
            continue
        seq = int(value[len(prefix):])
        if seq in found:
            continue
        when = (entry.get("recordedAt"), entry.get("sensorTimestamp"))
        reading = next((h for h in numeric if (h.get("recordedAt"), h.get("sensorTimestamp")) == when), None)
        data = {} if reading is None else {"value": reading.get("value"), "reVal": reading.get("rawValue"),
                                           "times": reading.get("sensorTimestamp")}
        found[seq] = {"data": data, "time": entry.get("recordedAt")}
    return found


def smoke_tlink(run: Any, s: Any, secrets: List[str]) -> None:
    from .bundle import CA_FILE, key_permission_warning
    from .device_api import DeviceCall, answer_text
    from .environment import Environment
    from .payloads import new_idempotency_key
    from .platforms import Platform
    from .profiles import TLINK, Credentials
    from .smoke_cli import _judge
    from .tlink_cli import DEFAULT_URL, URL_ENV, _from_base, build_parser, read_secret
    from .tlink_stamps import PushTimes, epoch_of

    if s.data is not None or s.metadata is not None:
        raise UsageError("--data and --metadata are not part of the TLINK smoke: each push carries sensor %d "
                         "(numeric) and the marker sensor %d (string)"
                         % (NUMERIC_SENSOR.sensor_id, MARKER_SENSOR.sensor_id))
    if s.url and s.base_url:
        raise UsageError("give the webhook as --url or --base-url, not both")
    problem = limit_problem("deviceId", s.device_id)
    if problem:
        raise UsageError("--device-id: %s" % problem)
    url = s.url or _from_base(s.base_url) or os.environ.get(URL_ENV, "").strip() or DEFAULT_URL
    ca_file = s.ca_file if s.ca_file is not None else run.certs_dir / CA_FILE
    # A world-writable secret file is refused (78) before it is read, as tlink_push.py does.
    warning = key_permission_warning(s.secret_file) if s.secret_file is not None else None
    secret = read_secret(s.secret_file, os.environ)
    if secret:
        secrets.append(secret.decode("utf-8", "replace"))  # the reporter redacts it from here on
    if warning:
        run.out.warn(warning)
    creds = Credentials(hmac_secret=secret)
    defaults = build_parser()
    device = DeviceInfo(s.device_id, defaults.get_default("user_id"), defaults.get_default("parent_user_id"))
    platform = Platform("tlink", TLINK, make_body=lambda *a: {}, parse_device_id=lambda text, where: text,
                        takes_metadata=False)
    reads = read_base(url)

    def call(base: str, path: str) -> "DeviceCall":
        return DeviceCall.open(platform, base, path, allow_http=s.allow_http, ca_file=ca_file, reporter=run.out,
                               timeout=min(s.timeout, max(run.left(), 0.5)))

    call(url, "").transport.close()  # the URL and the CA file are checked before any step (preflight)
    run.skip("health", "the TLINK reference receiver has no health check")
    run.skip("authenticate", "TLINK has no such call: a signature is only checked on a push, so send proves the secret "
             "(a wrong one is 77 there)"
             if secret else "no secret set: pushes go unsigned (a webhook that checks signatures refuses them "
             "at send, 77)")
    sent: List[SentPush] = []

    def send() -> str:
        times = PushTimes(device.device_id, Environment())
        # Start after the device's last push (an earlier run's in this very second, say): the reference
        # would keep that one and drop ours as a duplicate of its second.
        response, doc = call(reads, "%s/%d/latest" % (READ_PATH, device.device_id)).json(
            "GET", [], b"", "reading the device's last push time", ok_statuses=(404,))
        last = ((doc or {}).get("device") or {}).get("lastPushTime") if response.status == 200 else None
        if isinstance(last, str):
            try:
                times.last = epoch_of(last.replace("T", " ")[:19])
            except ValueError:
                pass  # not the reference's format: nothing to wait for
        gen = TlinkPushes(device, [NUMERIC_SENSOR])
        for seq in range(1, s.count + 1):
            if run.left() <= 0:
                raise TransientError("the deadline ran out after %d of %d push(es)" % (len(sent), s.count),
                                     hint="TLINK takes one push per second: give the run more --deadline")
            stamp_push = gen.next(times.generated())  # a second of its own: the reference keeps one per second
            stamp = stamp_push["time"]
            number = stamp_push["sensorsDates"][0]
            text = marker_text(run.verdict.run_id, seq)
            push = make_push(device, [number, reading_entry(MARKER_SENSOR, stamp[11:], text, text)], stamp)
            body = encode_push(push)
            doing = "pushing smoke reading %d" % seq
            response, doc = call(url, "").json("POST", TLINK.headers(body, new_idempotency_key(), creds), body,
                                               doing, ok_statuses=(401,))
            if response.status == 401:
                what, hint = TLINK.refusal(creds)
                err = IotPostError("%s (%s), while %s" % (what, answer_text(response), doing), hint=hint)
                err.exit_code = for_http_status(401)
                raise err
            processed = (doc or {}).get("storedReadings")
            if isinstance(processed, int) and processed != len(push["sensorsDates"]):
                err = IotPostError("the webhook processed %d of %d entries of smoke reading %d"
                                   % (processed, len(push["sensorsDates"]), seq))
                err.exit_code = ExitStatus.DATA
                raise err
            sent.append(SentPush(seq, stamp, {"value": number["value"], "reVal": number["reVal"],
                                              "times": number["times"]}))
            run.verdict.readings.append(Reading(seq, "%s/%d" % (run.verdict.run_id, seq), SKIPPED, None, stamp,
                                                "sent: %d, storedReadings %s" % (response.status, processed)))
        return "%d signed push(es) accepted" % len(sent) if secret else "%d unsigned push(es) accepted" % len(sent)

    run.step("send", send)

    def read_back() -> str:
        from urllib.parse import quote

        # startTime keeps other pushes to this device from crowding ours out of the history
        path = "%s?deviceId=%d&historyLimit=%d&startTime=%s" % (READ_PATH, device.device_id,
                                                                min(1000, 2 * len(sent) + 10), quote(sent[0].time))
        while True:
            _, doc = call(reads, path).json("GET", [], b"", "reading the pushes back from the reference read API")
            found = find_pushes(doc, device.device_id, run.verdict.run_id)
            if len(found) >= len(sent) or run.left() <= 0:
                break
            time.sleep(min(0.5, max(run.left(), 0.0)))
        as_sent: List[Tuple[int, Json, str, Optional[Json]]] = [(p.seq, p.data, p.time, None) for p in sent]
        try:
            return _judge(run, as_sent, found, RULES)
        except IotPostError as exc:
            exc.hint = ("the webhook acknowledged what it did not keep as sent (see each reading in the report); "
                        "the reference keeps the first reading per sensor and second, so another push to device "
                        "%d in the same second (the device itself, a concurrent run) also shows here: give the "
                        "smoke a --device-id of its own" % device.device_id)
            raise

    run.step("read_back", read_back)
