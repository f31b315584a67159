"""End to end: each failure is reported as what really happened, against servers other than the twin.

The twin answers like the platform; these servers answer like what sits in front of it in the field:
nginx's HTML error pages, a server left on TLS 1.1, a plain-HTTP port, a certificate for another name.
"""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
import unittest
import warnings
from pathlib import Path
from typing import Tuple

from tests.support import SENDER, TLINK, run_cli
from tests.twin_support import CA_PEM, CERTDATA, LOCALHOST_KEY, LOCALHOST_PEM, make_bundle, start_test_twin, temp_dir

NGINX_502 = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway"
             b"</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n")
PORTAL_400 = (b"<!DOCTYPE html>\n<html><head><meta charset=utf-8>\n<TITLE>\n  Hotel &amp; Spa\n  WiFi &#8211; "
              b"Login </TITLE></head><body><form>...</form></body></html>")


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # refused handshakes are the point
        pass


def serve(testcase: unittest.TestCase, handler: type, context=None) -> int:
    """A threaded HTTP(S) server on 127.0.0.1:<free port>, stopped at cleanup; returns the port.

    Reached as 127.0.0.1, not localhost: Windows would try ::1 first and wait ~2 s for its refusal.
    """
    server = QuietServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    testcase.addCleanup(server.server_close)
    testcase.addCleanup(thread.join, 5)
    testcase.addCleanup(server.shutdown)
    return server.server_address[1]


def html_handler(status: int, page: bytes) -> type:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 5

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler


def tls_server_context(maximum=None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(LOCALHOST_PEM), str(LOCALHOST_KEY))
    if maximum is not None:
        with warnings.catch_warnings():  # TLSv1/1.1 are deprecated: that is the point of the test
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = maximum
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


class Case(unittest.TestCase):
    def bundle(self, url: str) -> Path:
        return make_bundle(temp_dir(self) / "bundle", url=url)

    def assertOneErrorLine(self, proc, *words: str) -> str:
        errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
        self.assertEqual(len(errors), 1, proc.stderr)
        for w in words:
            self.assertIn(w, errors[0])
        self.assertNotIn("Traceback", proc.stderr)
        return errors[0]


class NameMismatchTests(Case):
    def test_an_ip_address_not_in_the_certificate_is_a_name_mismatch_listing_its_names(self):
        twin = start_test_twin(self, certfile=CERTDATA / "wronghost.pem", keyfile=CERTDATA / "wronghost.key")
        url = "https://127.0.0.1:%d" % twin.port
        proc = run_cli(SENDER, "--certs-dir", self.bundle(url))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        line = self.assertOneErrorLine(proc, "IP address 127.0.0.1", "name mismatch", "wrong-host.invalid")
        self.assertNotIn("not signed", line)  # it once blamed the CA (verify code 64)
        hint = [h for h in proc.stderr.splitlines() if ": hint: " in h][0]
        self.assertIn("--base-url", hint)
        self.assertNotIn("CA", hint)
        self.assertEqual(twin.requests, [])  # nothing sent, not on the diagnostic handshake either

    def test_tlink_names_its_own_url_flag(self):
        twin = start_test_twin(self, certfile=CERTDATA / "wronghost.pem", keyfile=CERTDATA / "wronghost.key")
        proc = run_cli(TLINK, "--ca-file", CA_PEM, "--url", "https://localhost:%d/api/webhooks/tlink" % twin.port)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertOneErrorLine(proc, "host localhost", "valid only for wrong-host.invalid")
        self.assertIn("--url", proc.stderr)
        self.assertNotIn("--base-url", proc.stderr)

    def test_every_name_the_certificate_holds_is_listed(self):
        try:
            twin = start_test_twin(self, host="127.0.0.2")  # localhost.pem: localhost, 127.0.0.1, ::1
        except OSError:
            self.skipTest("127.0.0.2 is not a loopback address here")
        proc = run_cli(SENDER, "--certs-dir", self.bundle("https://127.0.0.2:%d" % twin.port))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertOneErrorLine(proc, "IP address 127.0.0.2", "valid only for localhost, 127.0.0.1, ::1")


class CaFileTests(Case):
    def test_post_https_sample_takes_ca_file_and_then_needs_no_bundle_ca(self):
        twin = start_test_twin(self)
        bundle = self.bundle(twin.url)
        (bundle / "ca-chain.pem").unlink()
        proc = run_cli(SENDER, "--certs-dir", bundle)
        self.assertEqual(proc.returncode, 66, proc.stderr)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--ca-file", CA_PEM)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        proc = run_cli(SENDER, "--certs-dir", bundle, "--ca-file", CERTDATA / "other-ca.pem")
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertOneErrorLine(proc, "not signed by", "other-ca.pem")
        self.assertIn("--ca-file", proc.stderr)


class ProtocolTests(Case):
    def test_a_server_offering_only_tls_1_1_is_not_a_certificate_problem(self):
        try:
            ctx = tls_server_context(maximum=ssl.TLSVersion.TLSv1_1)
        except (ssl.SSLError, ValueError) as exc:
            self.skipTest("this OpenSSL cannot serve TLS 1.1 (%s)" % exc)
        port = serve(self, html_handler(200, b""), ctx)
        proc = run_cli(SENDER, "--certs-dir", self.bundle("https://127.0.0.1:%d" % port))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        line = self.assertOneErrorLine(proc, "older than 1.2")
        self.assertNotIn("certificate", line)
        self.assertIn("port", proc.stderr.split(": hint: ", 1)[1])

    def test_plain_http_on_the_https_port_says_it_is_not_tls(self):
        port = serve(self, html_handler(200, b""))
        proc = run_cli(SENDER, "--certs-dir", self.bundle("https://127.0.0.1:%d" % port))
        self.assertEqual(proc.returncode, 78, proc.stderr)
        line = self.assertOneErrorLine(proc, "did not answer in TLS", "plain HTTP")
        self.assertNotIn("certificate", line)
        self.assertIn("--base-url", proc.stderr)


class HtmlErrorPageTests(Case):
    def test_an_nginx_502_page_shows_its_title_never_markup(self):
        port = serve(self, html_handler(502, NGINX_502), tls_server_context())
        proc = run_cli(SENDER, "--certs-dir", self.bundle("https://127.0.0.1:%d" % port), "--retries", "0", "--json")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        sends = [json.loads(line) for line in proc.stdout.splitlines() if '"send"' in line]
        self.assertEqual(sends[0]["message"], "Bad Gateway")
        self.assertNotIn("<", proc.stdout + proc.stderr)
        self.assertIn("502 Bad Gateway", proc.stderr)

    def test_a_captive_portal_page_in_the_line_the_error_and_the_dead_letters(self):
        port = serve(self, html_handler(400, PORTAL_400), tls_server_context())
        folder = temp_dir(self)
        spool = folder / "spool.sqlite3"
        proc = run_cli(SENDER, "--certs-dir", self.bundle("https://127.0.0.1:%d" % port), "--spool", spool)
        self.assertEqual(proc.returncode, 65, proc.stderr)
        title = "Hotel & Spa WiFi \u2013 Login"
        self.assertIn("#1 400", proc.stdout)
        self.assertIn(title, proc.stdout)
        self.assertOneErrorLine(proc, "400 Bad Request: " + title)
        dead = run_cli(SENDER, "--certs-dir", folder / "bundle", "--spool", spool, "--dead-letters")
        self.assertEqual(json.loads(dead.stdout.splitlines()[0])["reason"], title)
        self.assertNotIn("<", proc.stdout + proc.stderr + dead.stdout)


class EncodingTests(Case):
    """Consoles that cannot encode everything: Thai Windows (cp874), cp1252, and plain ascii."""

    def run_on(self, encoding: str, script: Path, *args) -> Tuple[str, str, int]:
        proc = run_cli(script, *args, env={"PYTHONIOENCODING": encoding})
        self.assertNotIn("Traceback", proc.stderr)
        self.assertNotIn("UnicodeEncodeError", proc.stderr)
        return proc.stdout, proc.stderr, proc.returncode

    def test_dry_run_prints_the_exact_ascii_body_on_any_console(self):
        bundle = self.bundle("https://localhost:1")
        for encoding in ("cp874", "cp1252", "ascii"):
            for script, args in ((SENDER, ("--certs-dir", bundle)), (TLINK, ("--ca-file", CA_PEM))):
                with self.subTest(encoding=encoding, script=script.name):
                    out, err, code = self.run_on(encoding, script, "--dry-run", "--seed", "3", *args)
                    self.assertEqual(code, 0, err)
                    body = [line for line in out.splitlines() if line.startswith("{")]
                    self.assertEqual(len(body), 1, out)
                    self.assertIn("\\u00b0C", body[0])
                    compact = json.dumps(json.loads(body[0]), ensure_ascii=True, separators=(",", ":"))
                    self.assertEqual(body[0], compact)  # compact, as sent: not re-pretty-printed

    def test_json_lines_stay_valid_json_on_an_ascii_console(self):
        out, err, code = self.run_on("ascii", TLINK, "--ca-file", CA_PEM, "--dry-run", "--json")
        self.assertEqual(code, 0, err)
        record = json.loads(out.splitlines()[0])
        self.assertEqual(record["body"]["sensorsDates"][0]["unit"], "\u00b0C")

    def test_help_and_errors_with_characters_the_console_cannot_encode(self):
        out, err, code = self.run_on("ascii", TLINK, "--help")
        self.assertEqual(code, 0)
        self.assertIn("11922:1:\\xb0C", out)
        out, err, code = self.run_on("ascii", SENDER, "--certs-dir", self.bundle("https://localhost:1"),
                                     "--data-file", "/nonexistent/\u0e02\u0e49\u0e2d\u0e21\u0e39\u0e25.json")
        self.assertEqual(code, 65, err)
        self.assertIn("\\u0e02", err)

    def test_the_twin_receives_the_bytes_dry_run_shows(self):
        twin = start_test_twin(self)
        proc = run_cli(TLINK, "--ca-file", CA_PEM, "--url", twin.url + "/api/webhooks/tlink")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        body = twin.requests[0].body
        body.decode("ascii")
        self.assertIn(b"\\u00b0C", body)


class DnsTests(unittest.TestCase):
    """A name the resolver does not know. No test may query real DNS, so the resolver's own exception is
    raised where getaddrinfo would raise it, below a real Sender, spool and reporter."""

    def setUp(self) -> None:
        from tests.support import clear_proxy_env

        clear_proxy_env(self)

    def run_sender(self, exc: socket.gaierror) -> Tuple[str, str, object]:
        import io

        from iotpost.delivery import Sender
        from iotpost.environment import Environment
        from iotpost.output import Reporter
        from iotpost.profiles import TESAIOT, Credentials
        from iotpost.retry import RetryPolicy
        from iotpost.spool import MemorySpool
        from iotpost.target import parse_target
        from iotpost.transport import Transport, classify_network_error

        class Unresolvable(Transport):
            def _open(self):
                raise classify_network_error(exc, self.target, self._timeout)

        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdout=out, stderr=err, sleep=lambda s: None)
        target = parse_target("https://locahost:8443", TESAIOT.endpoint, names=TESAIOT.names)
        reporter = Reporter("post_https_sample.py", out, err)
        sender = Sender(Unresolvable(target, None, 1.0), TESAIOT, Credentials(api_key="k"), MemorySpool(),
                        RetryPolicy(total=2, backoff_base=0.0), reporter, env)
        result = sender.run([b"{}"], lambda: "key")
        return out.getvalue(), err.getvalue(), result

    def test_an_unknown_host_name_is_named_in_every_line_and_stays_temporary(self):
        no_name = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        out, err, result = self.run_sender(no_name)
        self.assertEqual(int(result.exit_code), 75)  # DNS does fail temporarily: kept retryable
        self.assertIn("cannot resolve the host name 'locahost'", out)  # the per-payload line
        self.assertIn("spelled right", out)
        self.assertIn("last error: cannot resolve the host name 'locahost'", result.error.message)
        self.assertIn("(3 attempts)", out)

    def test_the_hint_says_check_the_host_name_and_dns(self):
        from iotpost.profiles import TESAIOT
        from iotpost.target import parse_target
        from iotpost.transport import classify_network_error

        target = parse_target("https://locahost", "/x", names=TESAIOT.names)
        for errno_name in ("EAI_NONAME", "EAI_AGAIN"):
            with self.subTest(errno=errno_name):
                err = classify_network_error(socket.gaierror(getattr(socket, errno_name), "x"), target, 1.0)
                self.assertEqual(int(err.exit_code), 75)
                self.assertIn("'locahost'", err.message)
                self.assertIn("check the host name in --base-url / endpoints.json", err.hint)
                self.assertIn("DNS", err.hint)


class AbbreviationTests(unittest.TestCase):
    def test_a_prefix_is_no_longer_taken_and_a_near_miss_gets_did_you_mean(self):
        cases = [(SENDER, ["--retry", "5"], "--retry", "--retries"),
                 (SENDER, ["--retry-back", "1"], "--retry-back", "--retry-backoff"),
                 (TLINK, ["--secret", "s.txt"], "--secret", "--secret-file"),
                 (TLINK, ["--ur", "https://x"], "--ur", "--url")]
        from tests.support import RECEIVER

        cases.append((RECEIVER, ["--prot", "0"], "--prot", "--port"))
        for script, args, given, meant in cases:
            with self.subTest(args=args):
                proc = run_cli(script, *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
                self.assertEqual(errors, ["%s: error: unrecognized argument %s: did you mean %s?"
                                          % (script.name, given, meant)])
                self.assertIn("usage:", proc.stderr)

    def test_an_unknown_option_never_echoes_a_password_it_carries(self):
        for args in (["--https-proxy=http://u:hunter2@proxy.example:3128"],
                     ["http://u:hunter2@proxy.example:3128"]):
            with self.subTest(args=args):
                proc = run_cli(SENDER, *args)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("unrecognized argument", proc.stderr)
                self.assertNotIn("hunter2", proc.stderr + proc.stdout)

    def test_whole_names_and_combined_short_flags_still_work(self):
        from iotpost.receiver.cli import build_parser as receiver_parser
        from iotpost.tesaiot_cli import build_parser

        ns = build_parser().parse_args(["--retries=2", "--retry-backoff", "0.1", "--dry-run"])
        self.assertEqual((ns.retries, ns.retry_backoff, ns.dry_run), (2, 0.1, True))
        self.assertTrue(receiver_parser().parse_args(["-v"]).verbose)


if __name__ == "__main__":
    unittest.main()
