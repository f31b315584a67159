"""Output: text, JSON Lines and quiet modes, and no secret ever written in any of them."""

from __future__ import annotations

import io
import json
import unittest

from iotpost.output import (
    REDACTED,
    Redactor,
    Reporter,
    SendRecord,
    local_iso,
    redact_headers,
    short_message,
)
from iotpost.profiles import TESAIOT, Credentials

API_KEY = "tk_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HMAC_SECRET = "whsec-Zy9Xw8Vu7Ts6"
SECRETS = [API_KEY, HMAC_SECRET]
URL = "https://tesaiot.com/api/v1/telemetry"
BODY = b'{"device_id":"d","timestamp":"2025-12-09T10:30:45+00:00","data":{"t":1}}'
KEY = "3f2b8c1e-9d4a-4e7b-8c6d-1a2b3c4d5e6f"


def record(message: str = "accepted", status=202, ok: bool = True, attempts: int = 1,
           latency=0.0123) -> SendRecord:
    return SendRecord(seq=1, key=KEY, status=status, ok=ok, latency=latency, attempts=attempts,
                      message=message)


SUMMARY = {"accepted": 1, "attempted": 2, "delivered": 1, "failed": 1, "rejected": 0, "retries": 3,
           "input_errors": 0, "spooled": 0, "undelivered": 0, "dropped": 0, "elapsed_s": 1.25,
           "exit_code": 75}


class RedactorTest(unittest.TestCase):
    def test_replaces_every_occurrence(self) -> None:
        r = Redactor([API_KEY])
        self.assertEqual(r("a %s b %s" % (API_KEY, API_KEY)), "a %s b %s" % (REDACTED, REDACTED))

    def test_longest_first(self) -> None:
        # The short secret is a prefix of the long one; removing it first would leave the tail.
        r = Redactor(["abcd", "abcdefghij"])
        self.assertEqual(r("x abcdefghij y abcd"), "x %s y %s" % (REDACTED, REDACTED))
        r = Redactor(["abcdefghij", "abcd"])
        self.assertEqual(r("abcdefghij"), REDACTED)

    def test_empty_ignored_but_short_secrets_still_redacted(self) -> None:
        # A deliberately short secret is still a secret: mangled output beats a leak.
        r = Redactor(["", None, "abc"])  # type: ignore[list-item]
        self.assertEqual(r("a abc ab"), "a %s ab" % REDACTED)

    def test_four_chars_is_enough(self) -> None:
        self.assertEqual(Redactor(["abcd"])("xabcdx"), "x%sx" % REDACTED)

    def test_no_secrets_is_identity(self) -> None:
        self.assertEqual(Redactor()("anything " + API_KEY), "anything " + API_KEY)

    def test_redact_headers(self) -> None:
        headers = [("Content-Type", "application/json"), ("X-API-KEY", API_KEY), ("x-api-key", API_KEY),
                   ("Authorization", "Bearer " + API_KEY), ("Idempotency-Key", KEY)]
        self.assertEqual(redact_headers(headers), [
            ("Content-Type", "application/json"), ("X-API-KEY", REDACTED), ("x-api-key", REDACTED),
            ("Authorization", REDACTED), ("Idempotency-Key", KEY)])


class LocalIsoTest(unittest.TestCase):
    def test_local_time_with_its_utc_offset(self) -> None:
        import time

        text = local_iso(1795797969.25)
        self.assertRegex(text, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        tm = time.localtime(1795797969.25)
        self.assertTrue(text.startswith(time.strftime("%Y-%m-%dT%H:%M:%S", tm)))
        offset = tm.tm_gmtoff
        self.assertTrue(text.endswith("%s%02d:%02d" % ("+" if offset >= 0 else "-", abs(offset) // 3600,
                                                          abs(offset) // 60 % 60)))
        self.assertRegex(local_iso(1795797969.25, milliseconds=True), r"T\d\d:\d\d:\d\d\.250[+-]")

    @unittest.skipUnless(hasattr(__import__("time"), "tzset"), "time.tzset is POSIX only")
    def test_a_known_zone(self) -> None:
        import os
        import time

        old = os.environ.get("TZ")
        self.addCleanup(time.tzset)
        self.addCleanup(os.environ.__setitem__, "TZ", old) if old is not None else \
            self.addCleanup(os.environ.pop, "TZ", None)
        # POSIX TZ strings need no time-zone database (a minimal image may have none).
        for zone, expected in (("ICT-7", "1970-01-01T07:00:00+07:00"), ("UTC0", "1970-01-01T00:00:00+00:00"),
                               ("NST+3:30", "1969-12-31T20:30:00-03:30")):
            with self.subTest(zone=zone):
                os.environ["TZ"] = zone
                time.tzset()
                self.assertEqual(local_iso(0), expected)


class ReporterTestCase(unittest.TestCase):
    def reporter(self, mode: str = "text", verbose: bool = False, secrets=tuple(SECRETS)) -> Reporter:
        self.out = io.StringIO()
        self.err = io.StringIO()
        return Reporter("iotpost", self.out, self.err, mode=mode, verbose=verbose, secrets=secrets,
                        clock=lambda: 1795797969.5)

    def pop_at(self, doc: dict) -> dict:
        """Every JSON event carries the local time it was written; check it, compare the rest."""
        self.assertEqual(doc.pop("at"), local_iso(1795797969.5, milliseconds=True))
        return doc

    def everything(self, r: Reporter, leak: str) -> None:
        """Call every method, each with the secret somewhere a server or user could put it."""
        headers = TESAIOT.headers(BODY, KEY, Credentials(api_key=API_KEY))
        r.request("POST", URL, headers, BODY)
        r.response(401, "Unauthorized " + leak, {"WWW-Authenticate": "key=" + leak, "Server": "x"})
        r.retrying(1, "503 from server: " + leak, 1.5, 2, 4)
        r.sent(record(message="invalid key " + leak, status=401, ok=False))
        r.sent(record(message=leak, status=None, ok=False, latency=None, attempts=3))
        r.warn("server said " + leak)
        r.warn("dropping " + leak, loud=True)
        r.error("rejected " + leak, hint="check " + leak)
        r.dry_run(1, "POST", URL, headers, BODY.replace(b'"t":1', b'"note":"%s"' % leak.encode()))
        r.dry_run(2, "POST", URL, headers, b"not json " + leak.encode())
        r.json_line({"event": "custom", "text": leak})
        r.summary(dict(SUMMARY))


class NoSecretLeakTest(ReporterTestCase):
    def test_no_secret_in_any_mode(self) -> None:
        for mode in ("text", "json", "quiet"):
            for verbose in (False, True):
                for leak in SECRETS:
                    with self.subTest(mode=mode, verbose=verbose, leak=leak[:6]):
                        r = self.reporter(mode, verbose)
                        self.everything(r, leak)
                        written = self.out.getvalue() + self.err.getvalue()
                        self.assertIn(REDACTED, written)  # it did write the lines, redacted
                        for secret in SECRETS:
                            self.assertNotIn(secret, written)

    def test_verbose_request_shows_key_header_redacted(self) -> None:
        r = self.reporter("text", verbose=True, secrets=())  # header redaction needs no secret list
        r.request("POST", URL, TESAIOT.headers(BODY, KEY, Credentials(api_key=API_KEY)), BODY)
        lines = self.err.getvalue().splitlines()
        self.assertEqual(lines[0], "> POST " + URL)
        self.assertIn("> X-API-KEY: [REDACTED]", lines)
        self.assertIn("> Idempotency-Key: " + KEY, lines)
        self.assertIn("> Content-Type: application/json", lines)
        self.assertEqual(lines[-1], "> (%d bytes of body)" % len(BODY))
        self.assertNotIn(API_KEY, self.err.getvalue())
        self.assertEqual(self.out.getvalue(), "")  # traffic goes to stderr

    def test_request_and_response_silent_without_verbose(self) -> None:
        r = self.reporter("text", verbose=False)
        r.request("POST", URL, [("X-API-KEY", API_KEY)], BODY)
        r.response(200, "OK", {"Server": "x"})
        self.assertEqual(self.err.getvalue() + self.out.getvalue(), "")

    def test_verbose_response(self) -> None:
        r = self.reporter("text", verbose=True)
        r.response(503, "Service Unavailable", {"Retry-After": "5"})
        self.assertEqual(self.err.getvalue(), "< 503 Service Unavailable\n< Retry-After: 5\n")

    def test_dry_run_shows_key_header_redacted(self) -> None:
        r = self.reporter("text", secrets=())
        r.dry_run(1, "POST", URL, TESAIOT.headers(BODY, KEY, Credentials(api_key=API_KEY)), BODY)
        text = self.out.getvalue()
        self.assertIn("X-API-KEY: [REDACTED]", text)
        self.assertNotIn(API_KEY, text)
        self.assertIn("nothing is sent", text)
        self.assertIn("\n" + BODY.decode("ascii") + "\n", text)  # the exact bytes sent, not re-pretty-printed

    def test_secret_with_json_escaped_characters_in_json_mode(self) -> None:
        # Redacting after json.dumps would miss a secret holding " or \ (written escaped).
        secret = 'hmac"se\\cret'
        r = self.reporter("json", secrets=[secret])
        r.sent(record(message="bad signature for " + secret, status=401, ok=False))
        r.json_line({"event": "x", "nested": {"list": [secret, 1]}})
        first, second = self.out.getvalue().splitlines()
        self.assertEqual(json.loads(first)["message"], "bad signature for " + REDACTED)
        self.assertEqual(json.loads(second)["nested"], {"list": [REDACTED, 1]})
        self.assertNotIn(json.dumps(secret)[1:-1], self.out.getvalue())

    def test_truncated_server_message_does_not_leak_part_of_key(self) -> None:
        # The key straddles short_message's 120-character cut: redacting only afterwards (in the
        # Reporter) would miss the half that is left. delivery.Sender passes redact= for this.
        body = ("Authentication failed for device 05f8968a-b400-4727-9678-b53cb0889fce: the API key %s"
                " is not valid for this device" % API_KEY).encode()
        r = self.reporter("text")
        r.sent(record(message=short_message(body, redact=Redactor(SECRETS)), status=401, ok=False))
        written = self.out.getvalue()
        self.assertNotIn(API_KEY[:8], written)
        self.assertIn("the API key [REDACTED] is", written)


class TextModeTest(ReporterTestCase):
    def test_sent_line(self) -> None:
        r = self.reporter("text")
        r.sent(record())
        r.sent(SendRecord(seq=2, key=KEY, status=None, ok=False, latency=None, attempts=4,
                          message="connection refused"))
        self.assertEqual(self.out.getvalue().splitlines(), [
            "#1 202 12.3 ms accepted",
            "#2 --- connection refused (4 attempts)",
        ])
        self.assertEqual(self.err.getvalue(), "")

    def test_retrying_is_a_warning_on_stderr(self) -> None:
        r = self.reporter("text")
        r.retrying(3, "503 Service Unavailable", 2.25, 2, 4)
        self.assertEqual(self.err.getvalue(),
                         "iotpost: warning: #3 503 Service Unavailable; retrying in 2.2 s (attempt 2 of 4)\n")
        self.assertEqual(self.out.getvalue(), "")

    def test_error_and_hint(self) -> None:
        r = self.reporter("text")
        r.error("something broke", hint="do this")
        r.error("no hint")
        self.assertEqual(self.err.getvalue().splitlines(), [
            "iotpost: error: something broke", "iotpost: hint: do this", "iotpost: error: no hint"])

    def test_summary(self) -> None:
        r = self.reporter("text")
        r.summary(dict(SUMMARY))
        self.assertEqual(self.out.getvalue(), "summary: 1 new, 2 attempted, 1 delivered, 1 failed, "
                         "3 retries in 1.2 s (exit 75)\n")


class JsonModeTest(ReporterTestCase):
    def test_every_line_parses_as_json(self) -> None:
        r = self.reporter("json", verbose=True)
        self.everything(r, API_KEY)
        lines = self.out.getvalue().splitlines()
        self.assertGreaterEqual(len(lines), 6)
        events = [json.loads(line)["event"] for line in lines]
        self.assertEqual(events, ["retry", "send", "send", "dry_run", "dry_run", "custom", "summary"])

    def test_send_fields(self) -> None:
        r = self.reporter("json")
        r.sent(record())
        doc = self.pop_at(json.loads(self.out.getvalue()))
        self.assertEqual(doc, {"schema": 1, "event": "send", "seq": 1, "ok": True, "status": 202, "latency_ms": 12.3,
                               "attempts": 1, "message": "accepted", "idempotency_key": KEY})

    def test_no_status_no_latency(self) -> None:
        r = self.reporter("json")
        r.sent(record(status=None, ok=False, latency=None))
        doc = json.loads(self.out.getvalue())
        self.assertIsNone(doc["status"])
        self.assertIsNone(doc["latency_ms"])

    def test_retry_and_summary_fields(self) -> None:
        r = self.reporter("json")
        r.retrying(2, "timeout", 1.23456, 3, 4)
        r.summary({"accepted": 0, "exit_code": 75})
        retry, summary = [self.pop_at(json.loads(line)) for line in self.out.getvalue().splitlines()]
        self.assertEqual(retry, {"schema": 1, "event": "retry", "seq": 2, "reason": "timeout", "delay_s": 1.235,
                                 "next_attempt": 3, "max_attempts": 4})
        self.assertEqual(summary, {"schema": 1, "event": "summary", "accepted": 0, "exit_code": 75})

    def test_every_record_leads_with_the_schema_version(self) -> None:
        r = self.reporter("json")
        r.json_line({"event": "custom", "n": 1})
        r.json_line({"id": 3})  # a dead letter row: no event, still versioned
        for line in self.out.getvalue().splitlines():
            self.assertTrue(line.startswith('{"schema": 1, '), line)

    def test_dry_run_body_is_decoded(self) -> None:
        r = self.reporter("json")
        r.dry_run(1, "POST", URL, [("X-API-KEY", API_KEY)], BODY)
        doc = json.loads(self.out.getvalue())
        self.assertEqual(doc["body"], json.loads(BODY.decode()))
        self.assertEqual(doc["headers"], {"X-API-KEY": REDACTED})

    def test_non_ascii_kept(self) -> None:
        r = self.reporter("json")
        r.sent(record(message="temperature in °C"))
        self.assertIn("°C", self.out.getvalue())


class TimestampsTest(ReporterTestCase):
    def test_every_human_line_starts_with_the_time_and_json_is_untouched(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        r = Reporter("iotpost", out, err, verbose=True, timestamps=True, clock=lambda: 1795797969.5)
        self.everything(r, "x")
        stamp = local_iso(1795797969.5) + " "
        lines = out.getvalue().splitlines() + err.getvalue().splitlines()
        self.assertGreater(len(lines), 10)
        for line in lines:
            if not line.startswith("{"):  # json_line() output is for machines in every mode
                self.assertTrue(line.startswith(stamp), line)
        j = self.reporter("json")
        j.timestamps = True
        j.sent(record())
        self.assertTrue(self.out.getvalue().startswith("{"))

    def test_notice_prints_under_quiet(self) -> None:
        r = self.reporter("quiet")
        r.notice("delivered a backlog of 2 payload(s)")
        self.assertEqual(self.out.getvalue(), "iotpost: delivered a backlog of 2 payload(s)\n")


class QuietModeTest(ReporterTestCase):
    def test_sends_retries_and_summary_print_nothing(self) -> None:
        r = self.reporter("quiet")
        r.sent(record())
        r.sent(record(status=500, ok=False))
        r.retrying(1, "503", 1.0, 2, 4)
        r.warn("ordinary warning")
        r.summary(dict(SUMMARY))
        self.assertEqual(self.out.getvalue(), "")
        self.assertEqual(self.err.getvalue(), "")

    def test_loud_warnings_and_errors_still_print(self) -> None:
        r = self.reporter("quiet")
        r.warn("spool full: dropping 3 payloads", loud=True)
        r.error("credentials rejected", hint="download the bundle again")
        self.assertEqual(self.err.getvalue().splitlines(), [
            "iotpost: warning: spool full: dropping 3 payloads",
            "iotpost: error: credentials rejected",
            "iotpost: hint: download the bundle again",
        ])
        self.assertEqual(self.out.getvalue(), "")


class ShortMessageTest(unittest.TestCase):
    def test_json_message(self) -> None:
        self.assertEqual(short_message(b'{"message": "Telemetry accepted", "id": 5}'), "Telemetry accepted")

    def test_json_error(self) -> None:
        self.assertEqual(short_message(b'{"error": "invalid device"}'), "invalid device")

    def test_message_preferred_over_error(self) -> None:
        self.assertEqual(short_message(b'{"error": "E1", "message": "the message"}'), "the message")

    def test_nested_error(self) -> None:
        self.assertEqual(short_message(b'{"error": {"code": "E42", "message": "bad payload"}}'),
                         "bad payload")
        self.assertEqual(short_message(b'{"error": {"code": "E42"}}'), "E42")

    def test_status_field(self) -> None:
        self.assertEqual(short_message(b'{"status": "queued"}'), "queued")

    def test_json_without_known_field_is_shown_as_text(self) -> None:
        self.assertEqual(short_message(b'{"ok": true}'), '{"ok": true}')
        self.assertEqual(short_message(b'{"message": ""}'), '{"message": ""}')

    def test_plain_text_first_line(self) -> None:
        self.assertEqual(short_message(b"\n  Bad Gateway\nnginx/1.25\n"), "Bad Gateway")
        self.assertEqual(short_message(b"<html><body>502</body></html>"), "")  # never markup: the reason is shown

    def test_an_html_page_gives_its_title_never_markup(self) -> None:
        pages = {
            b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>nginx</body></html>": "Bad Gateway",
            b"<!DOCTYPE html><html><head><title>404 - File or directory not found.</title>": "File or directory not found.",
            b"\xef\xbb\xbf<html><TITLE lang=en>\n Caf&eacute; &amp;\n WiFi </TITLE>": "Caf\u00e9 & WiFi",
            b"<?xml version='1.0'?><error><message>no</message></error>": "",
        }
        for body, title in pages.items():
            with self.subTest(body=body[:30]):
                self.assertEqual(short_message(body), title)

    def test_a_secret_hidden_in_html_entities_is_still_redacted(self) -> None:
        secret = "tesa_ak_entity_secret"
        body = b"<html><title>key te&#115;a_ak_entity_secret rejected</title></html>"
        self.assertEqual(short_message(body, redact=Redactor([secret])), "key [REDACTED] rejected")

    def test_empty(self) -> None:
        self.assertEqual(short_message(b""), "")
        self.assertEqual(short_message(b"  \r\n"), "")

    def test_control_characters_replaced(self) -> None:
        self.assertEqual(short_message(b"bad\x1b[31mred\x07\tx"), "bad [31mred  x")
        self.assertEqual(short_message(b'{"message": "a\\u0000b\\u001bc"}'), "a b c")

    def test_invalid_utf8(self) -> None:
        self.assertEqual(short_message(b"caf\xe9 closed"), "caf\ufffd closed")

    def test_redact_runs_before_truncation(self) -> None:
        body = ("e" * 110 + API_KEY).encode()
        self.assertIn(API_KEY[:7], short_message(body))  # what happens without redact=
        got = short_message(body, redact=Redactor([API_KEY]))
        self.assertEqual(got, "e" * 110 + "[REDACTED]")  # exactly at the limit: kept whole
        got = short_message(b"f" * 5 + body, redact=Redactor([API_KEY]))
        self.assertEqual(got, "f" * 5 + "e" * 110 + "[R...")
        # Also inside a JSON message, and the key cannot hide behind JSON escapes in the body.
        doc = ('{"message": "bad key %s"}' % API_KEY).encode()
        self.assertEqual(short_message(doc, redact=Redactor([API_KEY])), "bad key [REDACTED]")

    def test_tlink_stored_readings(self) -> None:
        self.assertEqual(short_message(b'{"message": "ok", "storedReadings": 3}'), "accepted, storedReadings=3")
        self.assertEqual(short_message(b'{"storedReadings": 0}'), "accepted, storedReadings=0")
        self.assertEqual(short_message(b'{"status": "ok", "storedReadings": 3, "newReadings": 0}'),
                         "accepted, storedReadings=3, newReadings=0")
        self.assertEqual(short_message(b'{"storedReadings": "3"}'), '{"storedReadings": "3"}')

    def test_long_text_truncated(self) -> None:
        text = "x" * 500
        got = short_message(text.encode())
        self.assertEqual(len(got), 120)
        self.assertTrue(got.endswith("..."))
        self.assertEqual(got, "x" * 117 + "...")
        self.assertEqual(short_message(b"y" * 120), "y" * 120)  # exactly the limit is kept whole
        self.assertEqual(short_message(b"z" * 50, limit=20), "z" * 17 + "...")


if __name__ == "__main__":
    unittest.main()


class EscapedSecretTest(unittest.TestCase):
    def test_secret_escaped_in_server_json_is_redacted_after_decoding(self) -> None:
        secret = "my/secret/Value42"
        redact = Redactor([secret])
        for body in (b'{"message": "bad secret my\\/secret\\/Value42"}',
                     b'{"error": "bad \\u006dy/secret/Value42"}'):
            with self.subTest(body=body):
                self.assertNotIn(secret, short_message(body, redact=redact))
