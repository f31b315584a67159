"""--pin-sha256: the server key's SPKI pin (curl's --pinnedpubkey sha256//...), checked before a request byte."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import subprocess
import threading
import unittest

from iotpost.tlsctx import parse_pins, spki_der, spki_pin
from tests.support import SENDER, TLINK, run_cli
from tests.twin_support import CA_PEM, CERTDATA, LOCALHOST_KEY, LOCALHOST_PEM, make_bundle, start_test_twin, temp_dir

# Fixed pins of the committed test certificates (openssl x509 -pubkey | openssl pkey -pubin -outform der |
# openssl dgst -sha256 -binary | base64); regenerating tests/certdata changes them.
LOCALHOST_PIN = "Q10KVV4tshxq3AErGqkpBhlpThzOcfXerxUO47tfOgI="
OTHER_LOCALHOST_PIN = "Q1/VPXzAIosORALELD6LTDWUwHFaOt5DgNeXWbepAjw="
CLIENT_PIN = "rqr4DKt52mbZ10hzc+NKEvt7H+rA4J6FCQ8934T2i3s="


def der(name: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert((CERTDATA / name).read_text(encoding="ascii"))


class SpkiTests(unittest.TestCase):
    def test_pins_of_the_committed_certificates(self):
        self.assertEqual(spki_pin(der("localhost.pem")), LOCALHOST_PIN)
        self.assertEqual(spki_pin(der("other-localhost.pem")), OTHER_LOCALHOST_PIN)
        self.assertEqual(spki_pin(der("client.pem")), CLIENT_PIN)

    def test_every_test_certificate_agrees_with_openssl(self):
        if shutil.which("openssl") is None:
            self.skipTest("no openssl command here")
        names = sorted(p.name for p in CERTDATA.glob("*.pem"))
        self.assertGreater(len(names), 5)
        for name in names:
            with self.subTest(name=name):
                pubkey = subprocess.run(["openssl", "x509", "-in", str(CERTDATA / name), "-pubkey", "-noout"],
                                        capture_output=True, check=True).stdout
                spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey,
                                      capture_output=True, check=True).stdout
                self.assertEqual(spki_der(der(name)), spki)

    def test_a_certificate_cut_short_is_a_value_error(self):
        whole = der("localhost.pem")
        for cut in (0, 1, 4, 30, len(whole) // 2):
            with self.subTest(cut=cut):
                with self.assertRaises(ValueError):
                    spki_der(whole[:cut])
        with self.assertRaises(ValueError):
            spki_der(b"\x02\x01\x00")  # an INTEGER, not a certificate

    def test_pin_forms(self):
        self.assertEqual(parse_pins(LOCALHOST_PIN), [LOCALHOST_PIN])
        self.assertEqual(parse_pins("sha256//" + LOCALHOST_PIN), [LOCALHOST_PIN])
        self.assertEqual(parse_pins("sha256//%s;sha256//%s" % (LOCALHOST_PIN, CLIENT_PIN)),
                         [LOCALHOST_PIN, CLIENT_PIN])
        for bad in ("", "sha256//", "abc", base64.b64encode(b"x" * 31).decode(), "sha1//" + LOCALHOST_PIN, "!!"):
            with self.subTest(bad=bad):
                with self.assertRaises(ValueError):
                    parse_pins(bad)


class _SilentTLSServer:
    """A TLS listener that completes handshakes and counts every application byte it receives."""

    def __init__(self, testcase: unittest.TestCase) -> None:
        self.received = 0
        self.handshakes = 0
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(LOCALHOST_PEM), str(LOCALHOST_KEY))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(context,), daemon=True)
        self.thread.start()
        testcase.addCleanup(self.listener.close)
        testcase.addCleanup(self.thread.join, 10)

    def _serve(self, context: ssl.SSLContext) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError:
            return
        raw.settimeout(10)
        try:
            with context.wrap_socket(raw, server_side=True) as conn:
                self.handshakes += 1
                while True:
                    data = conn.recv(4096)
                    if not data:
                        return
                    self.received += len(data)
        except OSError:
            return


class PinningEndToEndTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.twin = start_test_twin(self)
        self.bundle = make_bundle(self.tmp / "bundle", twin=self.twin)

    def send(self, *args):
        return run_cli(SENDER, "--certs-dir", self.bundle, "--retries", "0", *args)

    def test_right_pin_passes_in_every_form(self):
        for pin in (LOCALHOST_PIN, "sha256//" + LOCALHOST_PIN, "sha256//%s;sha256//%s" % (CLIENT_PIN, LOCALHOST_PIN)):
            with self.subTest(pin=pin):
                proc = self.send("--pin-sha256", pin)
                self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = self.send("--pin-sha256", CLIENT_PIN, "--pin-sha256", LOCALHOST_PIN)  # repeated: any one matches
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.twin.requests), 4)

    def test_wrong_pin_is_78_and_the_twin_sees_no_request(self):
        proc = self.send("--pin-sha256", OTHER_LOCALHOST_PIN)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("matches no --pin-sha256", proc.stderr)
        self.assertIn("sha256//" + LOCALHOST_PIN, proc.stderr)  # what the server has, to compare
        self.assertEqual(self.twin.requests, [])
        self.assertEqual(self.twin.tls_failures, 0)  # the chain and name were fine: only the pin failed

    def test_wrong_pin_sends_not_one_byte_after_the_handshake(self):
        server = _SilentTLSServer(self)
        bundle = make_bundle(self.tmp / "silent", url="https://127.0.0.1:%d" % server.port)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--retries", "0", "--pin-sha256", CLIENT_PIN)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        server.thread.join(10)
        self.assertEqual(server.handshakes, 1)
        self.assertEqual(server.received, 0)

    def test_verbose_prints_the_pin_curl_would_take(self):
        proc = self.send("--verbose")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("server public key pin: sha256//" + LOCALHOST_PIN, proc.stderr)
        self.assertIn("; server certificate expires %s\n" % _openssl_end(LOCALHOST_PEM), proc.stderr)
        self.assertIn("(CA expires %s)\n" % _openssl_end(CA_PEM), proc.stderr)
        if shutil.which("curl") is not None:  # and curl agrees it is this server's pin
            curl = subprocess.run(["curl", "-s", "-o", os.devnull, "--cacert", str(CA_PEM), "--pinnedpubkey",
                                   "sha256//" + LOCALHOST_PIN, self.twin.url + "/"], capture_output=True)
            self.assertEqual(curl.returncode, 0, curl.stderr)

    def test_a_pin_or_client_certificate_on_plain_http_is_a_usage_error(self):
        twin = start_test_twin(self, tls=False)
        bundle = make_bundle(self.tmp / "http-bundle", twin=twin)
        for args in (["--pin-sha256", LOCALHOST_PIN], ["--client-cert", str(CERTDATA / "client.pem"),
                                                       "--client-key", str(CERTDATA / "client.key")]):
            with self.subTest(args=args[0]):
                proc = run_cli(SENDER, "--certs-dir", bundle, "--allow-http", *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("need an https:// URL", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_a_malformed_pin_is_a_usage_error(self):
        proc = self.send("--pin-sha256", "sha256//not-a-pin")
        self.assertEqual(proc.returncode, 2, proc.stderr)
        self.assertIn("--pin-sha256", proc.stderr)
        self.assertEqual(self.twin.requests, [])

    def test_tlink_push_checks_the_pin_too(self):
        url = self.twin.url + "/api/webhooks/tlink"
        wrong = run_cli(TLINK, "--url", url, "--ca-file", CA_PEM, "--retries", "0", "--pin-sha256", CLIENT_PIN)
        self.assertEqual(wrong.returncode, 78, wrong.stderr)
        self.assertEqual(self.twin.requests, [])
        right = run_cli(TLINK, "--url", url, "--ca-file", CA_PEM, "--retries", "0", "--pin-sha256", LOCALHOST_PIN)
        self.assertEqual(right.returncode, 0, right.stderr)


if __name__ == "__main__":
    unittest.main()


def _openssl_end(pem) -> str:
    """The certificate's notAfter day, read by openssl (not by the code under test); without openssl, the
    test PKI's fixed date (tests/certdata/README.md)."""
    if shutil.which("openssl") is None:
        return "2099-12-31"
    import datetime

    out = subprocess.run(["openssl", "x509", "-in", str(pem), "-noout", "-enddate"], capture_output=True,
                         text=True, check=True).stdout.strip().split("=", 1)[1]
    return datetime.datetime.strptime(out.replace(" GMT", ""), "%b %d %H:%M:%S %Y").strftime("%Y-%m-%d")
