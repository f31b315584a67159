"""The one TLS client context: always verifying, TLS 1.2+, optional client certificate (mTLS)."""

from __future__ import annotations

import ssl
import tempfile
import unittest
from pathlib import Path

from iotpost.errors import ConfigError, CredentialMissing, TLSVerifyError
from iotpost.exitcodes import ExitStatus
from iotpost.tlsctx import build_ssl_context, certificate_names, explain_tls_failure
from tests.twin_support import CERTDATA


class BuildContextTests(unittest.TestCase):
    def test_verification_is_on_and_tls12_is_the_floor(self):
        ctx = build_ssl_context(CERTDATA / "ca.pem")
        self.assertEqual(ctx.verify_mode, ssl.CERT_REQUIRED)
        self.assertTrue(ctx.check_hostname)
        self.assertEqual(ctx.minimum_version, ssl.TLSVersion.TLSv1_2)
        self.assertEqual(len(ctx.get_ca_certs()), 1)  # the bundle's CA only, no system store

    def test_client_certificate_for_mtls(self):
        build_ssl_context(CERTDATA / "ca.pem", CERTDATA / "client.pem", CERTDATA / "client.key")
        with self.assertRaises(ConfigError):
            build_ssl_context(CERTDATA / "ca.pem", CERTDATA / "client.pem", CERTDATA / "localhost.key")

    def test_missing_and_garbage_ca_files(self):
        with self.assertRaises(CredentialMissing):
            build_ssl_context(Path("/nonexistent/ca-chain.pem"))
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as fh:
            fh.write("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
            fh.flush()
            with self.assertRaises(ConfigError) as ctx:
                build_ssl_context(Path(fh.name))
        self.assertEqual(ctx.exception.exit_code, ExitStatus.CONFIG)


class ExplainTests(unittest.TestCase):
    def failure(self, code, message):
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code = code
        exc.verify_message = message
        return explain_tls_failure(exc, "platform.example", Path("bundle/ca-chain.pem"))

    def test_each_verification_failure_says_certificate_and_is_78(self):
        cases = {
            (20, "unable to get local issuer certificate"): "not signed by bundle/ca-chain.pem",
            (62, "Hostname mismatch, certificate is not valid for 'platform.example'."): "name mismatch",
            (10, "certificate has expired"): "has expired",
            (9, "certificate is not yet valid"): "not yet valid",
        }
        for (code, message), words in cases.items():
            with self.subTest(code=code):
                err = self.failure(code, message)
                self.assertIsInstance(err, TLSVerifyError)
                self.assertEqual(err.exit_code, ExitStatus.CONFIG)
                self.assertIn("certificate", err.message)
                self.assertIn(words, err.message)
                self.assertTrue(err.hint)

    def test_an_ip_mismatch_is_a_name_mismatch_listing_the_names_not_an_unknown_ca(self):
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code, exc.verify_message = 64, "IP address mismatch, certificate is not valid for '10.0.0.9'."
        err = explain_tls_failure(exc, "10.0.0.9", Path("ca-chain.pem"), cert_names=["platform.example", "10.0.0.1"],
                                  port=8443)
        self.assertIsInstance(err, TLSVerifyError)
        self.assertIn("not valid for the IP address 10.0.0.9 (it is valid only for platform.example, 10.0.0.1)",
                      err.message)
        self.assertIn("10.0.0.9:8443", err.message)
        self.assertNotIn("not signed", err.message)
        self.assertNotIn("CA", err.hint)

    def test_certificate_names_as_a_user_types_them(self):
        cert = {"subject": ((("commonName", "ignored.example"),),),
                "subjectAltName": (("DNS", "a.example"), ("IP Address", "0:0:0:0:0:0:0:1\n"), ("IP Address", "10.0.0.1"),
                                   ("DNS", "a.example"))}
        self.assertEqual(certificate_names(cert), ["a.example", "::1", "10.0.0.1"])
        self.assertEqual(certificate_names({"subject": ((("commonName", "cn.example"),),)}), ["cn.example"])

    def test_a_handshake_the_server_hung_up_on_is_temporary(self):
        for exc in (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), ssl.SSLZeroReturnError(6, "x")):
            with self.subTest(exc=type(exc).__name__):
                err = explain_tls_failure(exc, "h", None)
                self.assertEqual(err.exit_code, ExitStatus.TEMPFAIL)
                self.assertIn("during the TLS handshake", err.message)

    def test_other_handshake_failures_are_config_errors_not_certificate_ones(self):
        cases = {"[SSL: WRONG_VERSION_NUMBER] wrong version number": "did not answer in TLS",
                 "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version": "older than 1.2",
                 "[SSL: UNSUPPORTED_PROTOCOL] unsupported protocol": "older than 1.2",
                 "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure": "TLS handshake with h failed"}
        for text, words in cases.items():
            with self.subTest(text=text):
                err = explain_tls_failure(ssl.SSLError(1, text), "h", None)
                self.assertEqual(err.exit_code, ExitStatus.CONFIG)
                self.assertIn(words, err.message)
                self.assertNotIn("certificate", err.message)  # no certificate was involved
                self.assertIn("port", err.hint)


if __name__ == "__main__":
    unittest.main()
