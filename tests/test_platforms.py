"""Sender platforms: body shapes, device ids, the bundle's "platform" key, flags spelled alike, system trust.

The end-to-end runs against the twin's IoTFlow and Connectivity routes are in test_e2e_iotflow.
"""

from __future__ import annotations

import json
import os
import unittest
from pathlib import Path

from iotpost.errors import ConfigError, UsageError
from iotpost.platforms import SENDING, load, platform_from_endpoints
from tests.support import run_cli
from tests.twin_support import CA_PEM, PROJECT_ROOT, make_bundle, start_test_twin, temp_dir

SEND = PROJECT_ROOT / "post_https_sample.py"
IOTPOST = PROJECT_ROOT / "iotpost.py"
TLINK = PROJECT_ROOT / "tlink_push.py"


def dry_run_requests(stdout: str) -> list:
    """(request line, headers dict, body) of each request a --dry-run printed."""
    found = []
    for block in stdout.split("# dry run #")[1:]:
        lines = block.splitlines()[1:]
        request = lines[0]
        headers = {}
        body_lines = []
        in_body = False
        for line in lines[1:]:
            if in_body:
                body_lines.append(line)
            elif not line.strip():
                in_body = True
            else:
                name, _, value = line.partition(": ")
                headers[name] = value
        found.append((request, headers, "\n".join(body_lines).strip()))
    return found


def integer_bundle(folder: Path, platform: str, with_ca: bool = True, url: str = "https://localhost:8443") -> Path:
    make_bundle(folder, url=url, device_id="42")
    doc = json.loads((folder / "endpoints.json").read_text(encoding="utf-8"))
    doc["platform"] = platform
    (folder / "endpoints.json").write_text(json.dumps(doc), encoding="utf-8")
    if not with_ca:
        os.remove(str(folder / "ca-chain.pem"))
    return folder


class BodyShapes(unittest.TestCase):
    def test_each_platform_shapes_its_own_body(self):
        data, meta, stamp = {"t": 21.5}, {"site": "lab"}, "2026-11-27T10:00:00+00:00"
        self.assertEqual(load("tesaiot").make_body("dev", data, None, stamp),
                         {"device_id": "dev", "timestamp": stamp, "data": data})
        self.assertEqual(load("iotflow").make_body("42", data, meta, stamp),
                         {"data": data, "metadata": meta, "timestamp": stamp})
        self.assertEqual(load("connectivity").make_body("42", data, meta, stamp),
                         {"data": data, "metadata": {"site": "lab", "reading_time": stamp}, "type": "telemetry"})

    def test_connectivity_keeps_a_reading_time_the_caller_set(self):
        body = load("connectivity").make_body("42", {"t": 1}, {"reading_time": "mine"}, "2026-01-01T00:00:00Z")
        self.assertEqual(body["metadata"], {"reading_time": "mine"})

    def test_endpoints_and_auth_headers(self):
        self.assertEqual([(load(n).profile.endpoint, load(n).profile.auth(b"", _creds())[0][0]) for n in SENDING],
                         [("/api/v1/telemetry", "X-API-KEY"), ("/api/v1/telemetry", "X-API-Key"),
                          ("/api/v1/devices/telemetry", "X-API-Key")])

    def test_unknown_platform_is_a_usage_error(self):
        with self.assertRaises(UsageError):
            load("thingsboard")


def _creds():
    from iotpost.profiles import Credentials

    return Credentials(api_key="k")


class DeviceIdsAndBundles(unittest.TestCase):
    def test_integer_ids(self):
        parse = load("iotflow").parse_device_id
        self.assertEqual(parse(" 0042\n", "f"), "42")
        for bad in ("0", "-1", "4.2", "05f8968a-b400-4727-9678-b53cb0889fce", "", "٤٢"):
            with self.subTest(bad=bad), self.assertRaises(ConfigError) as cm:
                parse(bad, "device_id.txt")
            self.assertIn("IoTFlow device id", cm.exception.message)

    def test_platform_key(self):
        self.assertEqual(platform_from_endpoints({"platform": " IoTFlow "}, "e.json"), "iotflow")
        self.assertIsNone(platform_from_endpoints({"ingest_base_url": "https://x"}, "e.json"))
        for bad in ("thingsboard", 7, ["iotflow"]):
            with self.subTest(bad=bad), self.assertRaises(ConfigError) as cm:
                platform_from_endpoints({"platform": bad}, "e.json")
            self.assertIn("e.json", cm.exception.message)


class SendDryRuns(unittest.TestCase):
    def test_the_bundle_names_the_platform(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--data", '{"t": 1}', "--metadata", '{"site": "a"}')
        self.assertEqual(proc.returncode, 0, proc.stderr)
        (request, headers, body), = dry_run_requests(proc.stdout)
        self.assertEqual(request, "POST https://localhost:8443/api/v1/telemetry")
        self.assertIn("X-API-Key", headers)
        self.assertEqual(set(json.loads(body)), {"data", "metadata", "timestamp"})
        self.assertEqual(json.loads(body)["metadata"], {"site": "a"})

    def test_iotflow_stamps_to_the_millisecond_and_warns_when_two_readings_share_one(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--count", "2", "--interval", "0.25")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        stamps = [json.loads(body)["timestamp"] for _, _, body in dry_run_requests(proc.stdout)]
        self.assertRegex(stamps[0], r"T\d\d:\d\d:\d\d\.\d{3}\+00:00$")
        self.assertNotEqual(stamps[0], stamps[1])
        self.assertNotIn("warning", proc.stderr)
        lines = "\n".join(json.dumps({"data": {"t": n}, "timestamp": "2026-11-27T10:00:00Z"}) for n in (1, 2))
        data = temp_dir(self) / "same.jsonl"
        data.write_text(lines + "\n", encoding="utf-8")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--data-file", data)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("replaces the earlier", proc.stderr)
        tesaiot = make_bundle(temp_dir(self) / "t")
        proc = run_cli(SEND, "--certs-dir", tesaiot, "--dry-run")
        self.assertRegex(json.loads(dry_run_requests(proc.stdout)[0][2])["timestamp"], r":\d\d\+00:00$")

    def test_the_flag_wins_over_the_bundle(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        proc = run_cli(IOTPOST, "send", "--certs-dir", bundle, "--platform", "connectivity", "--dry-run")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        (request, _, body), = dry_run_requests(proc.stdout)
        self.assertEqual(request, "POST https://localhost:8443/api/v1/devices/telemetry")
        self.assertEqual(json.loads(body)["type"], "telemetry")

    def test_tesaiot_takes_no_metadata_and_a_uuid(self):
        bundle = make_bundle(temp_dir(self) / "b")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--metadata", "{}")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--metadata is not part of tesaiot", proc.stderr)
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--platform", "iotflow")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("does not hold an IoTFlow device id", proc.stderr)

    def test_metadata_is_sent_exactly_as_given(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        given = {"data": {"x": 1}, "site": "a", "timestamp": "soon"}  # keys --data would have treated specially
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--metadata", json.dumps(given))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(dry_run_requests(proc.stdout)[0][2])["metadata"], given)
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--metadata", "{ }")
        self.assertEqual(json.loads(dry_run_requests(proc.stdout)[0][2])["metadata"], {})

    def test_url_pieces(self):
        bundle = make_bundle(temp_dir(self) / "b")
        for url, sent in (("https://h/x?", "POST https://h/x"), ("https://h/x?q=1", "POST https://h/x?q=1"),
                          ("https://h:8443/", "POST https://h:8443/api/v1/telemetry")):
            with self.subTest(url=url):
                proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--url", url)
                self.assertEqual(dry_run_requests(proc.stdout)[0][0], sent, proc.stderr)
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--url", "https://h/x?q=1#f")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("#fragment", proc.stderr)

    def test_bad_metadata_is_a_usage_error_before_anything_is_sent(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        for bad in ("[1]", "{", '"x"'):
            with self.subTest(bad=bad):
                proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--metadata", bad)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("--metadata", proc.stderr)
                self.assertNotIn("Traceback", proc.stderr)

    def test_an_unknown_platform_in_the_bundle_is_78_naming_the_file(self):
        bundle = integer_bundle(temp_dir(self) / "b", "thingsboard")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("endpoints.json", proc.stderr)

    def test_url_and_base_url_mean_the_same_in_every_command(self):
        bundle = make_bundle(temp_dir(self) / "b")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--url", "https://example.net:9443/ingest/v2")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(dry_run_requests(proc.stdout)[0][0], "POST https://example.net:9443/ingest/v2")
        proc = run_cli(TLINK, "--dry-run", "--base-url", "https://example.net:9443/", "--ca-file", CA_PEM)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(dry_run_requests(proc.stdout)[0][0], "POST https://example.net:9443/api/webhooks/tlink")
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run", "--url", "https://x", "--base-url", "https://y")
        self.assertEqual(proc.returncode, 2)

    def test_iotpost_certs_dir_variable(self):
        bundle = integer_bundle(temp_dir(self) / "b", "connectivity")
        proc = run_cli(IOTPOST, "send", "--dry-run", env={"IOTPOST_CERTS_DIR": str(bundle)})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("/api/v1/devices/telemetry", dry_run_requests(proc.stdout)[0][0])


class DeviceCommandFlags(unittest.TestCase):
    def test_a_timeout_that_is_not_a_sane_number_is_a_usage_error(self):
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow")
        for command in ("heartbeat", "readings"):
            for bad in ("nan", "inf", "-1", "0", "abc"):
                with self.subTest(command=command, timeout=bad):
                    proc = run_cli(IOTPOST, command, "--certs-dir", bundle, "--timeout=" + bad)
                    self.assertEqual(proc.returncode, 2, proc.stderr)
                    self.assertNotIn("Traceback", proc.stderr)


class SystemTrustStore(unittest.TestCase):
    """A bundle without ca-chain.pem (IoTFlow, Connectivity) verifies against the system's store."""

    def test_a_server_the_system_does_not_trust_is_78_before_any_request(self):
        twin = start_test_twin(self)
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow", with_ca=False, url=twin.url)
        proc = run_cli(SEND, "--certs-dir", bundle, "--verbose", "--retries", "0",
                       env={"SSL_CERT_FILE": os.devnull, "SSL_CERT_DIR": os.devnull})
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("* trusting: the system's trust store", proc.stderr)
        self.assertIn("ca-chain.pem", proc.stderr.splitlines()[-1])  # the hint says where a CA goes
        self.assertEqual(twin.requests.snapshot(), [])

    def test_the_system_store_is_used_when_it_holds_the_ca(self):
        twin = start_test_twin(self)
        bundle = integer_bundle(temp_dir(self) / "b", "iotflow", with_ca=False, url=twin.url)
        # SSL_CERT_FILE is how OpenSSL's default store is pointed elsewhere (as certifi users do)
        proc = run_cli(SEND, "--certs-dir", bundle, "--retries", "0", env={"SSL_CERT_FILE": str(CA_PEM)})
        self.assertNotEqual(proc.returncode, 78, proc.stderr)  # TLS passed: the twin answered something
        self.assertEqual(len(twin.requests.snapshot()), 1)

    def test_tesaiot_still_needs_its_ca(self):
        bundle = make_bundle(temp_dir(self) / "b")
        os.remove(str(bundle / "ca-chain.pem"))
        proc = run_cli(SEND, "--certs-dir", bundle, "--dry-run")
        self.assertEqual(proc.returncode, 66, proc.stderr)



class CommandTable(unittest.TestCase):
    def test_unknown_commands_are_usage_errors_with_a_suggestion(self):
        for args in (["sned"], ["help", "sned"]):
            with self.subTest(args=args):
                proc = run_cli(IOTPOST, *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("did you mean send?", proc.stderr)
        proc = run_cli(IOTPOST)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("commands:", proc.stderr)
        proc = run_cli(IOTPOST, "help", "spool")
        self.assertEqual(proc.returncode, 0)
        self.assertIn("requeue ID", proc.stdout)


if __name__ == "__main__":
    unittest.main()
