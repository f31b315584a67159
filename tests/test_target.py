"""Target URL checks: https only, plain http only for this machine and only when asked."""

from __future__ import annotations

import unittest

from iotpost.errors import ConfigError
from iotpost.exitcodes import ExitStatus
from iotpost.profiles import TESAIOT
from iotpost.target import Target, is_loopback, join_path, parse_target

ENDPOINT = "/api/v1/telemetry"


class HttpsTargetTest(unittest.TestCase):
    def test_https_default_port(self) -> None:
        t = parse_target("https://tesaiot.com", ENDPOINT)
        self.assertEqual(t, Target("https", "tesaiot.com", 443, "/api/v1/telemetry"))
        self.assertEqual(t.netloc, "tesaiot.com")
        self.assertEqual(t.url, "https://tesaiot.com/api/v1/telemetry")

    def test_https_explicit_port(self) -> None:
        t = parse_target("https://tesaiot.com:8443", ENDPOINT)
        self.assertEqual((t.host, t.port), ("tesaiot.com", 8443))
        self.assertEqual(t.netloc, "tesaiot.com:8443")
        self.assertEqual(t.url, "https://tesaiot.com:8443/api/v1/telemetry")

    def test_explicit_default_port_is_not_repeated(self) -> None:
        self.assertEqual(parse_target("https://tesaiot.com:443", ENDPOINT).url,
                         "https://tesaiot.com/api/v1/telemetry")

    def test_scheme_and_host_case_insensitive(self) -> None:
        t = parse_target("HTTPS://TesAIoT.COM", ENDPOINT)
        self.assertEqual((t.scheme, t.host), ("https", "tesaiot.com"))

    def test_ipv6_host(self) -> None:
        t = parse_target("https://[2001:db8::1]:8443", ENDPOINT)
        self.assertEqual(t.host, "2001:db8::1")
        self.assertEqual(t.netloc, "[2001:db8::1]:8443")
        self.assertEqual(parse_target("https://[2001:db8::1]", ENDPOINT).netloc, "[2001:db8::1]")


class PathJoinTest(unittest.TestCase):
    def test_path_prefix_joining(self) -> None:
        cases = {
            ("https://h.test", "/api/v1/telemetry"): "/api/v1/telemetry",
            ("https://h.test/", "/api/v1/telemetry"): "/api/v1/telemetry",
            ("https://h.test", "api/v1/telemetry"): "/api/v1/telemetry",
            ("https://h.test/iot", "/api/v1/telemetry"): "/iot/api/v1/telemetry",
            ("https://h.test/iot/", "/api/v1/telemetry"): "/iot/api/v1/telemetry",
            ("https://h.test/iot//", "api/v1/telemetry"): "/iot/api/v1/telemetry",
            ("https://h.test/a/b", "/c"): "/a/b/c",
        }
        for (base, endpoint), path in cases.items():
            with self.subTest(base=base, endpoint=endpoint):
                self.assertEqual(parse_target(base, endpoint).path, path)

    def test_query_kept(self) -> None:
        t = parse_target("https://h.test/iot?tenant=7&x=a%20b", ENDPOINT)
        self.assertEqual(t.path, "/iot/api/v1/telemetry?tenant=7&x=a%20b")
        self.assertEqual(t.url, "https://h.test/iot/api/v1/telemetry?tenant=7&x=a%20b")

    def test_join_path_directly(self) -> None:
        self.assertEqual(join_path("", "/x"), "/x")
        self.assertEqual(join_path("/p/", "x"), "/p/x")

    def test_endpoint_as_full_url_refused(self) -> None:
        for endpoint in ("https://evil.test/api/v1/telemetry", "http://localhost/api"):
            with self.subTest(endpoint=endpoint):
                with self.assertRaises(ConfigError) as cm:
                    parse_target("https://tesaiot.com", endpoint, names=TESAIOT.names)
                self.assertIn("--endpoint", str(cm.exception))
                self.assertIn("--base-url", cm.exception.hint or "")


class PlainHttpTest(unittest.TestCase):
    def test_http_refused_without_allow_http(self) -> None:
        for url in ("http://tesaiot.com", "http://localhost:8080", "http://127.0.0.1", "http://[::1]:8080"):
            with self.subTest(url=url):
                with self.assertRaises(ConfigError) as cm:
                    parse_target(url, ENDPOINT)
                self.assertEqual(cm.exception.exit_code, ExitStatus.CONFIG)
                self.assertIn("http://", str(cm.exception))
                self.assertIn("--allow-http", cm.exception.hint or "")

    def test_http_allowed_for_loopback(self) -> None:
        cases = {
            "http://localhost": ("localhost", 80, "localhost"),
            "http://localhost:8080": ("localhost", 8080, "localhost:8080"),
            "http://127.0.0.1:8080": ("127.0.0.1", 8080, "127.0.0.1:8080"),
            "http://[::1]:8080": ("::1", 8080, "[::1]:8080"),
            "http://[::1]": ("::1", 80, "[::1]"),
        }
        for url, (host, port, netloc) in cases.items():
            with self.subTest(url=url):
                t = parse_target(url, ENDPOINT, allow_http=True)
                self.assertEqual((t.scheme, t.host, t.port, t.netloc), ("http", host, port, netloc))
                self.assertEqual(t.url, "http://%s/api/v1/telemetry" % netloc)

    def test_http_refused_for_other_hosts_even_with_allow_http(self) -> None:
        for url in ("http://tesaiot.com", "http://192.168.1.10:8080", "http://10.0.0.1",
                    "http://localhost.evil.test", "http://127.0.0.1.nip.io", "http://[2001:db8::1]"):
            with self.subTest(url=url):
                with self.assertRaises(ConfigError) as cm:
                    parse_target(url, ENDPOINT, allow_http=True)
                self.assertIn("--allow-http", str(cm.exception))

    def test_is_loopback(self) -> None:
        for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.8.9.10", "::1"):
            self.assertTrue(is_loopback(host), host)
        for host in ("0.0.0.0", "192.168.1.1", "example.com", "::", "", "localhost.evil.test"):
            self.assertFalse(is_loopback(host), host)


class RefusedUrlTest(unittest.TestCase):
    def test_userinfo_refused(self) -> None:
        for url in ("https://user:secret@tesaiot.com", "https://user@tesaiot.com",
                    "http://user:pw@localhost:8080"):
            with self.subTest(url=url):
                with self.assertRaises(ConfigError) as cm:
                    parse_target(url, ENDPOINT, allow_http=True)
                self.assertNotIn("secret", str(cm.exception))
                self.assertIn("user name or password", str(cm.exception))

    def test_garbage_urls(self) -> None:
        for url in ("", "tesaiot.com", "not a url", "ftp://tesaiot.com", "https://", "https:///path",
                    "https://tesaiot.com:notaport", "https://tesaiot.com:99999", "//tesaiot.com",
                    "file:///etc/passwd"):
            with self.subTest(url=url):
                with self.assertRaises(ConfigError) as cm:
                    parse_target(url, ENDPOINT)
                self.assertEqual(cm.exception.exit_code, ExitStatus.CONFIG)


if __name__ == "__main__":
    unittest.main()


class ReviewFindingsTest(unittest.TestCase):
    def test_spaces_and_control_characters_are_refused(self) -> None:
        for base, endpoint in (("https://local host", "/api"), ("https://localhost/a b", "/api"),
                               ("https://localhost", "/api/v1/tele metry"), ("https://localhost", "/x\r\nX: y")):
            with self.subTest(base=base, endpoint=endpoint):
                with self.assertRaises(ConfigError):
                    parse_target(base, endpoint)

    def test_port_zero_is_refused(self) -> None:
        with self.assertRaises(ConfigError):
            parse_target("https://localhost:0", "/api")

    def test_endpoint_url_refused_whatever_the_case(self) -> None:
        with self.assertRaises(ConfigError):
            parse_target("https://localhost", "HTTPS://elsewhere/api")

    def test_query_strings_are_merged(self) -> None:
        self.assertEqual(parse_target("https://h?y=2", "/t?x=1").path, "/t?y=2&x=1")
