"""End to end: mTLS bundles (client_cert.pem/client_key.pem) against the twin with --client-ca, over real TLS.

The twin requires a client certificate signed by the test CA, as TESAIoT's mTLS port does; each
refusal (none presented, expired, unknown issuer) must be exit 78 with a hint about the client
certificate, never a rejected payload or a dead letter.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import ssl
import threading
import unittest
from pathlib import Path

from tests.support import SENDER, TLINK, run_cli
from tests.twin_support import CA_PEM, CERTDATA, LOCALHOST_KEY, LOCALHOST_PEM, make_bundle, start_test_twin, temp_dir

DEVICE = "3d2c1b0a-9f8e-4d7c-8b6a-5f4e3d2c1b0a"
KEY = "tesa_ak_mtls_" + "m" * 24
PASSWORD_FILE = CERTDATA / "client-key-password.txt"
PASSWORD = PASSWORD_FILE.read_text(encoding="utf-8").strip()


def put_client_pair(bundle: Path, cert: str = "client.pem", key: str = "client.key") -> None:
    """Copy a test certificate and key into the bundle under the names an mTLS bundle uses."""
    shutil.copyfile(str(CERTDATA / cert), str(bundle / "client_cert.pem"))
    shutil.copyfile(str(CERTDATA / key), str(bundle / "client_key.pem"))
    os.chmod(str(bundle / "client_key.pem"), 0o600)


class MTLSTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = temp_dir(self)
        self.twin = start_test_twin(self, client_ca=CA_PEM)
        self.twin.register_device(DEVICE, KEY)

    def bundle(self, cert: str = "client.pem", key: str = "client.key", api_key: bool = True) -> Path:
        bundle = make_bundle(self.tmp / "bundle", twin=self.twin, device_id=DEVICE, api_key=KEY)
        if cert:
            put_client_pair(bundle, cert, key)
        if not api_key:
            os.unlink(str(bundle / "api_key.txt"))
        return bundle

    def send(self, bundle: Path, *args, **kwargs):
        return run_cli(SENDER, "--certs-dir", bundle, "--retries", "0", *args, **kwargs)

    def assertClientCertRefusal(self, proc, *words: str) -> None:
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("client certificate", proc.stderr)
        self.assertIn("hint:", proc.stderr)
        self.assertNotIn("rejected payload", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)
        for word in words:
            self.assertIn(word, proc.stderr)


class BundledClientCertificateTests(MTLSTestCase):
    def test_bundled_client_certificate_is_presented_and_the_payload_stored(self):
        proc = self.send(self.bundle(), "--count", "2", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.twin.store.all_telemetry(DEVICE)), 2)
        self.assertEqual(self.twin.tls_failures, 0)
        self.assertNotIn(KEY, proc.stdout + proc.stderr)

    def test_mtls_bundle_needs_no_api_key_and_sends_none(self):
        # The verified client certificate is the credential: stored without any X-API-KEY header.
        proc = self.send(self.bundle(api_key=False))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.twin.requests), 1)
        self.assertNotIn("x-api-key", self.twin.requests[0].headers)
        self.assertEqual(len(self.twin.store.all_telemetry(DEVICE)), 1)
        dry = self.send(self.bundle(api_key=False), "--dry-run")
        self.assertEqual(dry.returncode, 0, dry.stderr)
        self.assertNotIn("X-API-KEY", dry.stdout)

    def test_server_tls_bundle_with_flags_presents_the_given_pair(self):
        bundle = self.bundle(cert="")
        proc = self.send(bundle, "--client-cert", CERTDATA / "client.pem", "--client-key", CERTDATA / "client.key")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(self.twin.store.all_telemetry(DEVICE)), 1)

    def test_tlink_push_presents_a_client_certificate(self):
        proc = run_cli(TLINK, "--url", self.twin.url + "/api/webhooks/tlink", "--ca-file", CA_PEM,
                       "--client-cert", CERTDATA / "client.pem", "--client-key", CERTDATA / "client.key",
                       "--retries", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        without = run_cli(TLINK, "--url", self.twin.url + "/api/webhooks/tlink", "--ca-file", CA_PEM,
                          "--retries", "0")
        self.assertClientCertRefusal(without, "none was presented")


class RefusedClientCertificateTests(MTLSTestCase):
    def test_missing_client_certificate_is_78_and_the_payload_stays_spooled(self):
        spool = self.tmp / "spool.sqlite3"
        proc = self.send(self.bundle(cert=""), "--spool", spool)
        self.assertClientCertRefusal(proc, "requires a client certificate and none was presented",
                                     "client_cert.pem")
        self.assertEqual(self.twin.requests, [])
        status = run_cli(SENDER, "--spool", spool, "--spool-status", "--json")
        record = json.loads(status.stdout.splitlines()[-1])
        self.assertEqual(record["pending"], 1, status.stdout)
        self.assertEqual(record["dead_letters"], 0, status.stdout)

    def test_expired_client_certificate_is_78(self):
        proc = self.send(self.bundle("client-expired.pem", "client-expired.key"))
        self.assertClientCertRefusal(proc, "refused the client certificate", "client_cert.pem", "CERTIFICATE_EXPIRED")
        self.assertEqual(self.twin.requests, [])

    def test_client_certificate_from_an_unknown_issuer_is_78(self):
        proc = self.send(self.bundle("client-other-ca.pem", "client-other-ca.key"))
        self.assertClientCertRefusal(proc, "refused the client certificate", "UNKNOWN_CA")
        self.assertEqual(self.twin.requests, [])

    def test_refusal_is_78_over_tls_1_2_too(self):
        # TLS 1.2 refuses during the handshake, TLS 1.3 after it: both must read the same way.
        twin = start_test_twin(self, client_ca=CA_PEM)
        twin._ssl_context.maximum_version = ssl.TLSVersion.TLSv1_2
        bundle = make_bundle(self.tmp / "b12", twin=twin, device_id=DEVICE, api_key=KEY)
        put_client_pair(bundle, "client-expired.pem", "client-expired.key")
        self.assertClientCertRefusal(self.send(bundle), "refused the client certificate")
        put_client_pair(bundle)
        self.assertEqual(self.send(bundle).returncode, 0)


class BrokenPairTests(MTLSTestCase):
    def test_mismatched_pair_is_78_naming_the_key(self):
        proc = self.send(self.bundle("client.pem", "client-expired.key"))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("client_key.pem is not the private key of", proc.stderr)
        self.assertEqual(self.twin.requests, [])

    def test_half_a_pair_is_66_naming_the_missing_file(self):
        bundle = self.bundle()
        os.unlink(str(bundle / "client_key.pem"))
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 66, proc.stderr)
        self.assertIn("client_key.pem is missing", proc.stderr)
        os.unlink(str(bundle / "client_cert.pem"))
        put_client_pair(bundle)
        os.unlink(str(bundle / "client_cert.pem"))
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 66, proc.stderr)
        self.assertIn("client_cert.pem is missing", proc.stderr)

    def test_a_file_that_is_no_certificate_is_78_naming_it(self):
        bundle = self.bundle()
        (bundle / "client_cert.pem").write_text("not a certificate\n", encoding="utf-8")
        proc = self.send(bundle)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("client_cert.pem", proc.stderr)
        self.assertNotIn("Traceback", proc.stderr)


class EncryptedKeyTests(MTLSTestCase):
    def test_password_from_a_file(self):
        proc = self.send(self.bundle(key="client-encrypted.key"), "--client-key-password-file", PASSWORD_FILE,
                         "--verbose")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)

    def test_password_from_the_environment(self):
        proc = self.send(self.bundle(key="client-encrypted.key"), "--verbose",
                         env={"IOTPOST_CLIENT_KEY_PASSWORD": PASSWORD})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn(PASSWORD, proc.stdout + proc.stderr)

    def test_no_password_is_78_and_never_prompts(self):
        proc = self.send(self.bundle(key="client-encrypted.key"), timeout=20)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("is encrypted and no password was given", proc.stderr)
        self.assertIn("--client-key-password-file", proc.stderr)
        self.assertEqual(self.twin.requests, [])

    def test_wrong_password_is_78(self):
        proc = self.send(self.bundle(key="client-encrypted.key"), env={"IOTPOST_CLIENT_KEY_PASSWORD": "wrong"})
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("cannot be decrypted", proc.stderr)

    def test_there_is_no_password_flag(self):
        proc = self.send(self.bundle(key="client-encrypted.key"), "--client-key-password", PASSWORD)
        self.assertEqual(proc.returncode, 2, proc.stderr)


class _NginxLike(http.server.BaseHTTPRequestHandler):
    """nginx with ssl_verify_client on answers a missing or refused certificate with these 400 pages."""

    page = "No required SSL certificate was sent"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = ("<html>\r\n<head><title>400 %s</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1>"
                "</center>\r\n<center>%s</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
                % (self.page, self.page)).encode("ascii")
        self.send_response(400, "Bad Request")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


class NginxPagesTests(unittest.TestCase):
    def serve(self, page: str) -> str:
        handler = type("Handler", (_NginxLike,), {"page": page})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(LOCALHOST_PEM), str(LOCALHOST_KEY))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return "https://127.0.0.1:%d" % server.server_address[1]  # where it listens (not ::1, as localhost may try)

    def test_nginx_400_pages_are_78_not_dead_letters(self):
        tmp = temp_dir(self)
        for page, words in (("No required SSL certificate was sent", "none was presented"),
                            ("The SSL certificate error", "refused the client certificate")):
            with self.subTest(page=page):
                bundle = make_bundle(tmp / page.replace(" ", "-"), url=self.serve(page))
                if "error" in page:
                    put_client_pair(bundle)
                spool = tmp / ("%s.sqlite3" % page.replace(" ", "-"))
                proc = run_cli(SENDER, "--certs-dir", bundle, "--spool", spool, "--retries", "0")
                self.assertEqual(proc.returncode, 78, proc.stderr)
                self.assertIn(words, proc.stderr)
                self.assertIn(page, proc.stderr)
                status = run_cli(SENDER, "--spool", spool, "--spool-status", "--json")
                record = json.loads(status.stdout.splitlines()[-1])
                self.assertEqual((record["pending"], record["dead_letters"]), (1, 0), status.stdout)


if __name__ == "__main__":
    unittest.main()
