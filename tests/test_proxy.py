"""Proxies: URL parsing, NO_PROXY as curl matches it, the CONNECT tunnel, and end to end through a proxy."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import unittest

from iotpost.errors import ConfigError, IotPostError, TransientError
from iotpost.exitcodes import ExitStatus
from iotpost.proxy import (DEFAULT_PORT, Proxy, choose_proxy, connect_request, no_proxy_matches, open_tunnel,
                           parse_proxy_url, proxy_secrets)
from iotpost.target import parse_target
from iotpost.transport import Transport, proxy_configured
from iotpost.transport import proxy_secrets as configured_secrets
from tests.proxy_support import closed_port, start_test_proxy
from tests.support import PROJECT_ROOT, TLINK, cli_env, run_cli
from tests.test_e2e_sender import DEVICE, SenderTestCase
from tests.twin_support import CERTDATA, client_context, start_test_twin

PASSWORD = "p@ss"
TOKEN = base64.b64encode(b"user:p@ss").decode("ascii")


class ParseProxyUrlTests(unittest.TestCase):
    def test_http_url_with_port_and_credentials_percent_decoded(self):
        p = parse_proxy_url("http://user:p%40ss%3Aw@proxy.example:3128/", "--proxy")
        self.assertEqual((p.host, p.port, p.username, p.password), ("proxy.example", 3128, "user", "p@ss:w"))
        self.assertEqual(p.where, "proxy.example:3128")
        self.assertEqual(p.authorization(), "Basic " + base64.b64encode(b"user:p@ss:w").decode())

    def test_no_scheme_is_http_and_no_port_is_1080_as_curl(self):
        p = parse_proxy_url("proxy.example", "HTTPS_PROXY")
        self.assertEqual((p.host, p.port, p.source), ("proxy.example", DEFAULT_PORT, "HTTPS_PROXY"))
        self.assertEqual(DEFAULT_PORT, 1080)
        self.assertEqual(parse_proxy_url("u:pw@proxy.example:3128", "x")[:4], ("proxy.example", 3128, "u", "pw"))
        self.assertEqual(parse_proxy_url("HTTP://Proxy.Example:8080", "x").port, 8080)

    def test_ipv6_proxy_and_user_without_password(self):
        p = parse_proxy_url("http://user@[::1]:3128", "x")
        self.assertEqual((p.host, p.where, p.password), ("::1", "[::1]:3128", None))
        self.assertEqual(p.authorization(), "Basic " + base64.b64encode(b"user:").decode())
        self.assertIsNone(parse_proxy_url("http://[::1]:3128", "x").authorization())

    def test_https_and_socks_proxies_are_78_not_supported_and_never_show_the_password(self):
        for url in ("https://u:s3cret@proxy:443", "socks5://u:s3cret@proxy:1080", "socks5h://proxy",
                    "socks4://proxy", "socks4a://proxy", "SOCKS5://proxy"):
            with self.subTest(url=url), self.assertRaises(ConfigError) as cm:
                parse_proxy_url(url, "--proxy")
            self.assertEqual(cm.exception.exit_code, ExitStatus.CONFIG)
            self.assertIn("not supported", cm.exception.message)
            self.assertNotIn("s3cret", cm.exception.message + (cm.exception.hint or ""))

    def test_unusable_urls_are_78(self):
        for url in ("ftp://proxy:21", "http://proxy:99999", "http://proxy:0", "http://:3128", "http://u:s3cret@"):
            with self.subTest(url=url), self.assertRaises(ConfigError) as cm:
                parse_proxy_url(url, "--proxy")
            self.assertNotIn("s3cret", cm.exception.message + (cm.exception.hint or ""))


class NoProxyTests(unittest.TestCase):
    def test_star_alone_matches_every_host(self):
        for host in ("tesaiot.com", "127.0.0.1", "::1"):
            self.assertTrue(no_proxy_matches(host, "*"))
            self.assertTrue(no_proxy_matches(host, " * "))
        self.assertFalse(no_proxy_matches("tesaiot.com", "*,example.com"))  # curl: '*' only on its own

    def test_names_match_themselves_and_subdomains_on_a_label_boundary(self):
        for entry in ("example.com", ".example.com", "EXAMPLE.com", "example.com."):
            with self.subTest(entry=entry):
                self.assertTrue(no_proxy_matches("example.com", entry))
                self.assertTrue(no_proxy_matches("www.Example.COM", entry))
                self.assertTrue(no_proxy_matches("a.b.example.com.", entry))
                self.assertFalse(no_proxy_matches("notexample.com", entry))
                self.assertFalse(no_proxy_matches("example.com.org", entry))

    def test_lists_are_comma_or_blank_separated_and_empty_entries_ignored(self):
        self.assertTrue(no_proxy_matches("b.org", "a.com, b.org"))
        self.assertTrue(no_proxy_matches("b.org", "a.com b.org"))
        self.assertTrue(no_proxy_matches("b.org", ",,b.org,"))
        self.assertFalse(no_proxy_matches("c.net", "a.com,,b.org"))
        self.assertFalse(no_proxy_matches("c.net", ""))
        self.assertFalse(no_proxy_matches("c.net", None))

    def test_addresses_match_addresses_and_cidr_not_names(self):
        self.assertTrue(no_proxy_matches("127.0.0.1", "127.0.0.1"))
        self.assertFalse(no_proxy_matches("127.0.0.2", "127.0.0.1"))
        self.assertTrue(no_proxy_matches("10.1.2.3", "192.168.0.0/16,10.0.0.0/8"))
        self.assertFalse(no_proxy_matches("11.1.2.3", "10.0.0.0/8"))
        self.assertTrue(no_proxy_matches("::1", "::1"))
        self.assertTrue(no_proxy_matches("::1", "[::1]"))
        self.assertTrue(no_proxy_matches("fd12::1", "fd00::/8"))
        self.assertFalse(no_proxy_matches("127.0.0.1", "localhost"))  # no name resolution, as curl
        self.assertFalse(no_proxy_matches("localhost", "127.0.0.1"))

    def test_entries_with_a_port_match_nothing_as_curl(self):
        self.assertFalse(no_proxy_matches("example.com", "example.com:443"))
        self.assertFalse(no_proxy_matches("127.0.0.1", "127.0.0.1:8443"))


class ChooseProxyTests(unittest.TestCase):
    def choose(self, environ, flag=None, noproxy=None, host="tesaiot.com"):
        proxy = choose_proxy(host, flag, noproxy, environ)
        return None if proxy is None else (proxy.host, proxy.source)

    def test_environment_order_is_curls_for_https_urls(self):
        env = {"https_proxy": "a:1", "HTTPS_PROXY": "b:1", "all_proxy": "c:1", "ALL_PROXY": "d:1"}
        self.assertEqual(self.choose(env), ("a", "https_proxy"))
        del env["https_proxy"]
        self.assertEqual(self.choose(env), ("b", "HTTPS_PROXY"))
        del env["HTTPS_PROXY"]
        self.assertEqual(self.choose(env), ("c", "all_proxy"))
        del env["all_proxy"]
        self.assertEqual(self.choose(env), ("d", "ALL_PROXY"))

    def test_empty_variables_count_as_unset_and_http_proxy_is_not_for_https(self):
        self.assertEqual(self.choose({"https_proxy": "", "HTTPS_PROXY": "b:1"}), ("b", "HTTPS_PROXY"))
        self.assertIsNone(self.choose({"http_proxy": "h:1", "HTTP_PROXY": "h:1"}))
        self.assertIsNone(self.choose({}))

    def test_flag_wins_and_an_empty_flag_means_direct(self):
        env = {"HTTPS_PROXY": "b:1"}
        self.assertEqual(self.choose(env, flag="f:1"), ("f", "--proxy"))
        self.assertIsNone(self.choose(env, flag=""))
        self.assertFalse(proxy_configured("", env))
        self.assertTrue(proxy_configured(None, env))
        self.assertFalse(proxy_configured(None, {"NO_PROXY": "x", "http_proxy": "h:1"}))

    def test_no_proxy_applies_to_the_flag_too_and_noproxy_flag_wins_over_it(self):
        self.assertIsNone(self.choose({"NO_PROXY": "tesaiot.com"}, flag="f:1"))
        self.assertIsNone(self.choose({"no_proxy": "tesaiot.com", "NO_PROXY": "other"}, flag="f:1"))
        self.assertEqual(self.choose({"NO_PROXY": "*"}, flag="f:1", noproxy=""), ("f", "--proxy"))
        self.assertEqual(self.choose({"NO_PROXY": "*"}, flag="f:1", noproxy="other.org"), ("f", "--proxy"))
        self.assertIsNone(self.choose({"HTTPS_PROXY": "b:1"}, noproxy="*"))

    def test_a_bypassed_proxy_is_not_parsed_but_a_used_one_must_be_http(self):
        self.assertIsNone(self.choose({"ALL_PROXY": "socks5://s:1080", "NO_PROXY": "*"}))
        with self.assertRaises(ConfigError):
            self.choose({"ALL_PROXY": "socks5://s:1080"})


class SecretsTests(unittest.TestCase):
    def test_every_form_of_the_password_is_a_secret(self):
        found = proxy_secrets("http://user:p%40ss@proxy:3128")
        for form in ("p%40ss", PASSWORD, TOKEN, "Basic " + TOKEN):
            self.assertIn(form, found)
        self.assertNotIn("user", found)
        self.assertEqual(proxy_secrets("http://proxy:3128"), [])
        self.assertEqual(proxy_secrets("user@proxy:3128"), [])
        self.assertIn("pw", proxy_secrets("u:pw@proxy"))  # no scheme
        self.assertIn("pw", proxy_secrets("socks5://u:pw@proxy"))  # even a URL that is refused later

    def test_the_run_collects_secrets_from_the_flag_and_the_environment(self):
        env = {"HTTPS_PROXY": "http://u:envpw@p:1"}
        self.assertIn("envpw", configured_secrets(None, env))
        self.assertIn("flagpw", configured_secrets("http://u:flagpw@p:1", env))
        self.assertEqual(configured_secrets("", env), [])  # --proxy "": no proxy, nothing loaded


class ConnectRequestTests(unittest.TestCase):
    def test_request_line_and_host_name_the_platform_with_ipv6_in_brackets(self):
        p = Proxy("proxy", 3128, None, None, "--proxy")
        self.assertEqual(connect_request(p, "tesaiot.com", 443, "ua/1"),
                         b"CONNECT tesaiot.com:443 HTTP/1.1\r\nHost: tesaiot.com:443\r\nUser-Agent: ua/1\r\n\r\n")
        head = connect_request(p, "2001:db8::1", 8443, "ua/1").decode()
        self.assertTrue(head.startswith("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n"))
        self.assertNotIn("Proxy-Authorization", head)
        authed = connect_request(p._replace(username="user", password=PASSWORD), "h", 1, "ua").decode()
        self.assertIn("\r\nProxy-Authorization: Basic %s\r\n" % TOKEN, authed)


class _OneShotServer:
    """A loopback listener that answers the first connection with fixed bytes (or nothing)."""

    def __init__(self, testcase: unittest.TestCase, answer: bytes = b"") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.received = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        testcase.addCleanup(self._stop)

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            while b"\r\n\r\n" not in self.received:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                self.received += chunk
            if self.answer:
                conn.sendall(self.answer)
            self.done.wait(5)

    def _stop(self) -> None:
        self.done.set()
        self.sock.close()
        self.thread.join(5)


class TunnelTests(unittest.TestCase):
    def proxy_at(self, port: int) -> Proxy:
        return Proxy("127.0.0.1", port, None, None, "--proxy")

    def test_only_the_answer_head_is_read_the_rest_belongs_to_tls(self):
        server = _OneShotServer(self, b"HTTP/1.1 200 Connection established\r\nX-A: b\r\n\r\nFIRST-TLS-BYTES")
        sock = open_tunnel(self.proxy_at(server.port), "tesaiot.com", 443, 5, "ua")
        self.addCleanup(sock.close)
        self.assertEqual(sock.recv(100), b"FIRST-TLS-BYTES")
        self.assertTrue(server.received.startswith(b"CONNECT tesaiot.com:443 HTTP/1.1\r\n"))

    def test_a_silent_proxy_times_out_within_timeout_as_75_naming_it(self):
        server = _OneShotServer(self)  # reads the CONNECT, never answers
        with self.assertRaises(TransientError) as cm:
            open_tunnel(self.proxy_at(server.port), "tesaiot.com", 443, 0.2, "ua")
        self.assertIn("proxy 127.0.0.1:%d did not answer CONNECT within 0.2s" % server.port, cm.exception.message)

    def test_an_answer_that_is_not_http_is_75(self):
        server = _OneShotServer(self, b"SSH-2.0-OpenSSH\r\n\r\n")
        with self.assertRaises(TransientError) as cm:
            open_tunnel(self.proxy_at(server.port), "tesaiot.com", 443, 5, "ua")
        self.assertIn("not HTTP", cm.exception.message)

    def test_refusals_map_to_exit_codes(self):
        for status, code in ((407, 77), (401, 77), (403, 77), (500, 75), (502, 75), (503, 75), (504, 75), (404, 75)):
            with self.subTest(status=status):
                server = _OneShotServer(self, b"HTTP/1.1 %d Whatever\r\n\r\n" % status)
                with self.assertRaises(IotPostError) as cm:
                    open_tunnel(self.proxy_at(server.port), "tesaiot.com", 443, 5, "ua")
                self.assertEqual(cm.exception.exit_code, code)
                self.assertIn("127.0.0.1:%d" % server.port, cm.exception.message)
                self.assertNotIn("tesaiot.com", cm.exception.message)


class TransportThroughProxyTests(unittest.TestCase):
    def test_connect_raw_is_a_plain_socket_through_the_tunnel_that_tls_can_wrap(self):
        twin = start_test_twin(self)
        proxy = start_test_proxy(self)
        target = parse_target(twin.url, "/")
        transport = Transport(target, client_context(), 5, proxy=proxy.url)
        sock = transport._connect_raw()
        self.addCleanup(sock.close)
        self.assertNotIsInstance(sock, ssl.SSLSocket)
        with client_context().wrap_socket(sock, server_hostname=target.host) as tls:
            self.assertEqual(tls.getpeercert()["subjectAltName"][0], ("DNS", "localhost"))
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port])

    def test_http_targets_and_no_proxy_hosts_connect_directly(self):
        env = {"HTTPS_PROXY": "http://127.0.0.1:1", "NO_PROXY": ".localhost"}
        http = parse_target("http://127.0.0.1:8080", "/", allow_http=True)
        self.assertIsNone(Transport(http, None, 1, proxy="http://127.0.0.1:1", environ={}).proxy)
        self.assertIsNone(Transport(parse_target("https://localhost:1", "/"), None, 1, environ=env).proxy)
        used = Transport(parse_target("https://tesaiot.com", "/"), None, 1, environ=env).proxy
        self.assertEqual((used.host, used.port, used.source), ("127.0.0.1", 1, "HTTPS_PROXY"))


_PROBE = r"""
import io, json, sys
from iotpost import tesaiot_cli
from iotpost.environment import Environment
code = tesaiot_cli._main(sys.argv[1:], [], Environment(stdout=io.StringIO(), stderr=io.StringIO()))
print(json.dumps({"code": code, "proxy_loaded": "iotpost.proxy" in sys.modules}))
"""


class ProxyLoadedOnlyWhenConfiguredTests(SenderTestCase):
    def probe(self, bundle, *args, env=None):
        proc = subprocess.run([sys.executable, "-c", _PROBE, "--certs-dir", str(bundle)] + list(args),
                              capture_output=True, text=True, cwd=str(PROJECT_ROOT), env=cli_env(env), timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        return json.loads(proc.stdout.splitlines()[-1])

    def test_a_direct_send_never_imports_iotpost_proxy(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        bundle = self.bundle(twin)
        self.assertEqual(self.probe(bundle, env={"NO_PROXY": "localhost"}), {"code": 0, "proxy_loaded": False})
        self.assertEqual(self.probe(bundle, "--proxy", proxy.url), {"code": 0, "proxy_loaded": True})


class SendThroughProxyTests(SenderTestCase):
    def assertNoProxySecret(self, proc) -> None:
        for form in (PASSWORD, "p%40ss", TOKEN):
            self.assertNotIn(form, proc.stdout)
            self.assertNotIn(form, proc.stderr)

    def test_proxy_flag_tunnels_one_connection_and_tls_verifies_the_platform(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        proc = self.send(self.bundle(twin), "--proxy", proxy.url, "--count", "3", "--interval", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port])  # one tunnel, reused
        self.assertEqual(proxy.requests[0].headers["host"], "localhost:%d" % twin.port)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 3)
        self.assertEqual(len({r.client_port for r in twin.requests}), 1)

    def test_https_proxy_variable_is_honoured_and_lower_case_wins(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        proc = self.send(self.bundle(twin), env={"HTTPS_PROXY": proxy.url})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port])
        dead = "http://127.0.0.1:%d" % closed_port(self)
        proc = self.send(self.bundle(twin), env={"https_proxy": proxy.url, "HTTPS_PROXY": dead})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(len(proxy.connects), 2)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)

    def test_no_proxy_noproxy_and_empty_proxy_flag_bypass_the_proxy(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        bundle = self.bundle(twin)
        for args, env in ((["--proxy", proxy.url], {"NO_PROXY": "localhost"}),
                          ([], {"HTTPS_PROXY": proxy.url, "no_proxy": "example.org,.localhost"}),
                          (["--proxy", proxy.url, "--noproxy", "*"], {}),
                          (["--proxy", ""], {"HTTPS_PROXY": proxy.url})):
            with self.subTest(args=args, env=env):
                proc = self.send(bundle, *args, env=env)
                self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.requests, [])
        self.assertEqual(twin.store.count_telemetry(DEVICE), 4)

    def test_credentials_are_percent_decoded_sent_as_basic_and_never_shown(self):
        twin = self.twin()
        proxy = start_test_proxy(self, auth=("user", PASSWORD))
        url = "http://user:p%%40ss@127.0.0.1:%d" % proxy.port
        proc = self.send(self.bundle(twin), "--proxy", url, "--verbose")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.requests[0].headers["proxy-authorization"], "Basic " + TOKEN)
        self.assertNoProxySecret(proc)
        self.assertNoSecret(proc)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_credentials_stay_hidden_when_a_refusal_quotes_them_and_on_every_error(self):
        twin = self.twin()
        echo = start_test_proxy(self, auth=("user", PASSWORD), echo_auth=True)
        failing = start_test_proxy(self, status=503)
        bundle = self.bundle(twin)
        for args, env, code in (
                (["--proxy", "http://user:p%%40ss@127.0.0.1:%d" % echo.port], {}, 77),
                ([], {"HTTPS_PROXY": "http://user:p%%40ss@127.0.0.1:%d" % failing.port}, 75),
                ([], {"ALL_PROXY": "http://user:p%%40ss@127.0.0.1:%d" % closed_port(self)}, 75),
                (["--proxy", "socks5://user:p%40ss@127.0.0.1:1"], {}, 78),
                (["--proxy", "http://user:p%40ss@127.0.0.1:99999"], {}, 78)):
            with self.subTest(args=args, env=env):
                proc = self.send(bundle, "--verbose", "--retries", "0", "--debug", *args, env=env)
                self.assertEqual(proc.returncode, code, proc.stderr)
                self.assertNoProxySecret(proc)
                if args and "%d" % echo.port in args[1]:
                    # The careless proxy quoted the header back: proof the redaction, not luck, hid it.
                    self.assertIn("(407 Bad credentials [REDACTED])", proc.stderr)
        self.assertEqual(twin.requests, [])

    def test_407_without_or_with_wrong_credentials_is_77_naming_the_proxy(self):
        twin = self.twin()
        proxy = start_test_proxy(self, auth=("user", PASSWORD))
        bundle = self.bundle(twin)
        proc = self.send(bundle, "--proxy", proxy.url)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("proxy %s requires credentials (407" % proxy.where, proc.stderr)
        proc = self.send(bundle, "--proxy", "http://user:wrong@%s" % proxy.where)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("proxy %s refused the proxy credentials (407" % proxy.where, proc.stderr)
        self.assertNotIn(str(twin.port), proc.stderr)  # the platform is not the one refusing
        self.assertEqual(len(proxy.connects), 2)  # not retried
        self.assertEqual(twin.requests, [])

    def test_401_from_the_proxy_as_tinyproxy_answers_a_wrong_password_is_77(self):
        twin = self.twin()
        proxy = start_test_proxy(self, auth=("user", PASSWORD), refuse_status=401)
        proc = self.send(self.bundle(twin), "--proxy", "http://user:wrong@%s" % proxy.where)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("proxy %s refused the proxy credentials (401" % proxy.where, proc.stderr)

    def test_a_proxy_forbidding_the_tunnel_is_77_and_the_platform_name_is_resolved_by_the_proxy(self):
        # tinyproxy answers "403 Access violation" to CONNECT on a port outside its ConnectPort list.
        proxy = start_test_proxy(self)  # tunnels to loopback only, 403 otherwise
        proc = self.send(self.bundle(None, url="https://tesaiot.invalid"), "--proxy", proxy.url)
        self.assertEqual(proc.returncode, 77, proc.stderr)
        self.assertIn("proxy %s does not allow a tunnel to the platform (403" % proxy.where, proc.stderr)
        self.assertEqual(proxy.connects, ["tesaiot.invalid:443"])  # no local DNS lookup of the platform

    def test_unreachable_proxy_is_75_naming_the_proxy(self):
        twin = self.twin()
        port = closed_port(self)
        proc = self.send(self.bundle(twin), "--proxy", "127.0.0.1:%d" % port, "--retries", "0")
        self.assertEqual(proc.returncode, 75, proc.stderr)
        self.assertIn("connection refused by proxy 127.0.0.1:%d" % port, proc.stderr)
        self.assertNotIn(str(twin.port), proc.stderr)
        self.assertEqual(twin.requests, [])  # never silently direct

    def test_proxy_failing_the_tunnel_is_75_and_retried(self):
        twin = self.twin()
        for status in (502, 503):
            with self.subTest(status=status):
                proxy = start_test_proxy(self, status=status)
                proc = self.send(self.bundle(twin), "--proxy", proxy.url, "--retries", "1", "--retry-backoff", "0.01")
                self.assertEqual(proc.returncode, 75, proc.stderr)
                self.assertIn("proxy %s could not open a tunnel to the platform (%d" % (proxy.where, status),
                              proc.stderr)
                self.assertEqual(len(proxy.connects), 2)
        self.assertEqual(twin.requests, [])

    def test_a_proxy_intercepting_tls_fails_verification_with_78(self):
        twin = self.twin()
        proxy = start_test_proxy(self, mitm=True)
        proc = self.send(self.bundle(twin), "--proxy", proxy.url)
        self.assertEqual(proc.returncode, 78, proc.stderr)
        self.assertIn("not signed by", proc.stderr)
        self.assertIn("goes through proxy %s" % proxy.where, proc.stderr)
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port])
        self.assertEqual(twin.requests, [])
        self.assertNoSecret(proc)

    def test_https_and_socks_proxy_urls_are_78_and_nothing_is_sent(self):
        twin = self.twin()
        proxy = start_test_proxy(self)
        for scheme in ("https", "socks5"):
            with self.subTest(scheme=scheme):
                proc = self.send(self.bundle(twin), env={"HTTPS_PROXY": "%s://127.0.0.1:%d" % (scheme, proxy.port)})
                self.assertEqual(proc.returncode, 78, proc.stderr)
                self.assertIn("%s:// proxies are not supported (from HTTPS_PROXY)" % scheme, proc.stderr)
        self.assertEqual(proxy.requests, [])
        self.assertEqual(twin.requests, [])

    def test_an_idle_connection_closed_by_the_platform_is_reopened_through_a_new_tunnel(self):
        twin = self.twin(handler_timeout=0.3)
        proxy = start_test_proxy(self)
        proc = self.send(self.bundle(twin), "--proxy", proxy.url, "--count", "2", "--interval", "0.8",
                         "--json", "--retries", "0")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(json.loads(proc.stdout.splitlines()[-1])["retries"], 0)
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port] * 2)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 2)

    def test_ipv6_platform_is_tunnelled_with_brackets(self):
        try:
            twin = self.twin(host="::1")
        except OSError:
            self.skipTest("no IPv6 loopback here")
        proxy = start_test_proxy(self)
        proc = self.send(self.bundle(twin), "--proxy", proxy.url)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.connects, ["[::1]:%d" % twin.port])

    def test_plain_http_to_this_machine_never_uses_a_proxy(self):
        twin = self.twin(tls=False)
        proc = self.send(self.bundle(twin), "--allow-http", "--proxy", "http://127.0.0.1:%d" % closed_port(self))
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(twin.store.count_telemetry(DEVICE), 1)

    def test_tlink_push_goes_through_the_proxy_too(self):
        twin = start_test_twin(self)
        proxy = start_test_proxy(self, auth=("user", PASSWORD))
        proc = run_cli(TLINK, "--url", twin.url + "/api/webhooks/tlink", "--ca-file", CERTDATA / "ca.pem",
                       "--verbose", env={"HTTPS_PROXY": "http://user:p%%40ss@%s" % proxy.where})
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proxy.connects, ["localhost:%d" % twin.port])
        self.assertEqual(len([r for r in twin.requests if r.method == "POST"]), 1)
        self.assertNotIn(PASSWORD, proc.stderr + proc.stdout)
        self.assertNotIn(TOKEN, proc.stderr + proc.stdout)


class CliEnvTests(unittest.TestCase):
    def test_a_developers_own_proxy_settings_never_reach_the_tested_programs(self):
        saved = dict(os.environ)
        self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
        for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy", "NO_PROXY", "no_proxy"):
            os.environ[name] = "http://127.0.0.1:1"
        env = cli_env()
        self.assertFalse([k for k in env if k.lower().endswith("_proxy")])
        self.assertEqual(cli_env({"HTTPS_PROXY": "x:1"})["HTTPS_PROXY"], "x:1")


if __name__ == "__main__":
    unittest.main()
