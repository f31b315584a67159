"""Every --flag a hint names exists in the command that prints it.

Two sweeps. Dynamic: the hint-making functions every sender shares are called, for each command,
with that command's Profile.names, through every branch. Static: every string literal in iotpost/
that is a hint (a ``hint=``/``auth_hint=`` argument, a ``...hint...`` function's text, or a
written ``hint:`` line) is scanned for ``--flags``, which must exist in each command that can reach
the code; ONE_COMMAND lists the code only one command runs.
"""

from __future__ import annotations

import ast
import http.client
import re
import socket
import ssl
import unittest
from pathlib import Path
from typing import Iterator, Set, Tuple

from iotpost import heartbeat_cli, readings_cli, register_cli, smoke_cli, tesaiot_cli, thermacore_cli, tlink_cli
from iotpost.delivery import error_for_response
from iotpost.errors import ConfigError
from iotpost.profiles import TESAIOT, TLINK, Profile
from iotpost.receiver.cli import build_parser as receiver_parser
from iotpost.target import parse_target
from iotpost.tlsctx import explain_tls_failure
from iotpost.transport import classify_network_error

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
PACKAGE = Path(tesaiot_cli.__file__).resolve().parent
SENDERS = ("post_https_sample.py", "tlink_push.py")
COMMANDS = {
    "post_https_sample.py": (tesaiot_cli.build_parser, TESAIOT),
    "tlink_push.py": (tlink_cli.build_parser, TLINK),
}
# One request each, in IoTFlow's or Connectivity's words (device_api), never the senders' spool/dry-run hints.
DEVICE_PARSERS = {
    "iotpost register": register_cli.build_parser,
    "iotpost heartbeat": heartbeat_cli.build_parser,
    "iotpost readings": readings_cli.build_parser,
}
DEVICE_COMMANDS = tuple(DEVICE_PARSERS)
OTHER_PARSERS = {
    "iotpost readings --platform thermacore": thermacore_cli.build_parser,
    "iotpost smoke": smoke_cli.build_parser,
}
# A command's own modules: every hint in them is checked against that command's flags.
MODULE_COMMANDS = {
    "smoke_cli.py": ("iotpost smoke",),
    "thermacore_smoke.py": ("iotpost smoke",),
    "tlink_smoke.py": ("iotpost smoke",),
}
# (module, function) pairs only one command runs; everything else in iotpost/ is shared by both senders.
ONE_COMMAND = {
    ("bundle.py", "_read_text"): "post_https_sample.py",
    ("bundle.py", "parse_endpoints"): "post_https_sample.py",
    ("bundle.py", "load_bundle"): "post_https_sample.py",
    ("platforms/__init__.py", "platform_from_endpoints"): "post_https_sample.py",
    ("platforms/__init__.py", "parse"): "post_https_sample.py",
    ("tesaiot_cli.py", "choose_platform"): "post_https_sample.py",
    ("thermacore_client.py", "_failure"): ("iotpost readings --platform thermacore", "iotpost smoke"),
    ("thermacore_cli.py", "load_credentials"): ("iotpost readings --platform thermacore", "iotpost smoke"),
    ("register_cli.py", "settings_from_args"): "iotpost register",
    ("register_cli.py", "refuse_existing"): "iotpost register",
    ("register_cli.py", "_main"): "iotpost register",
    ("register_cli.py", "_register"): "iotpost register",
    ("device_bundle.py", "choose_device_platform"): ("iotpost heartbeat", "iotpost readings"),
    ("device_api.py", "error_for_answer"): DEVICE_COMMANDS,
    ("device_api.py", "json"): DEVICE_COMMANDS + ("iotpost smoke",),
}


def flags_of(command: str) -> Set[str]:
    if command == "receiver.py":
        return set(receiver_parser().option_names())
    if command in DEVICE_PARSERS:
        return set(DEVICE_PARSERS[command]().option_names())
    if command in OTHER_PARSERS:
        return set(OTHER_PARSERS[command]().option_names())
    return set(COMMANDS[command][0]().option_names())


def dynamic_hints(profile: Profile) -> Iterator[Tuple[str, str]]:
    """(where, hint) for every branch of the shared hint makers, worded for ``profile``'s command."""
    names = profile.names
    target = parse_target("https://platform.example:8443", "" if profile is TLINK else profile.endpoint, names=names)
    cert_names = ["platform.example", "10.0.0.1"]
    for code, text in ((62, "Hostname mismatch"), (64, "IP address mismatch"), (10, "certificate has expired"),
                       (9, "certificate is not yet valid"), (20, "unable to get local issuer certificate")):
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code, exc.verify_message = code, text
        yield "tls %d" % code, explain_tls_failure(exc, target.host, Path("ca.pem"), names, cert_names).hint
    for text in ("[SSL: WRONG_VERSION_NUMBER] x", "[SSL: UNSUPPORTED_PROTOCOL] x", "[SSL: HANDSHAKE_FAILURE] x"):
        yield text, explain_tls_failure(ssl.SSLError(1, text), target.host, None, names).hint
    yield "tls eof", explain_tls_failure(ssl.SSLEOFError(8, "EOF"), target.host, None, names).hint
    for exc in (http.client.InvalidURL("x"), socket.timeout(), ConnectionRefusedError(), ConnectionResetError(),
                socket.gaierror(socket.EAI_NONAME, "x"), socket.gaierror(socket.EAI_AGAIN, "x"),
                http.client.BadStatusLine("x"), ssl.SSLError(1, "x"), OSError(5, "x")):
        yield type(exc).__name__, classify_network_error(exc, target, 1.0).hint
    for status in (301, 400, 401, 403, 404, 405, 409, 413, 429, 500, 503):
        err = error_for_response(status, "R", "m", target.url, 1, "https://x/", profile.auth_hint, names)
        yield "HTTP %d" % status, err.hint
    bad_urls = ["ftp://x", "http://x.example", "https://u:p@x", "https://x:0", "https://x/a b"]
    for url in bad_urls + (["https://x"] if profile is TESAIOT else []):
        endpoint = "https://x/y" if url == "https://x" else ""
        try:
            parse_target(url, endpoint, allow_http=url.startswith("http://x."), names=names)
        except ConfigError as exc:
            yield "target %s" % url, exc.hint
        try:
            parse_target(url, endpoint, names=names)
        except ConfigError as exc:
            yield "target %s" % url, exc.hint
    yield "auth", profile.auth_hint
    yield "names", " ".join(n for n in names if n)


def _hint_literals(tree: ast.AST) -> Iterator[Tuple[str, str]]:
    """(function, text) for each string literal that is, or is part of, a hint."""
    def strings(node: ast.AST) -> Iterator[str]:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                yield sub.value

    def visit(node: ast.AST, function: str) -> Iterator[Tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            name = function
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = child.name
                if "hint" in name:
                    for text in strings(child):
                        yield name, text
            if isinstance(child, ast.keyword) and child.arg in ("hint", "auth_hint"):
                for text in strings(child.value):
                    yield name, text
            if isinstance(child, ast.Constant) and isinstance(child.value, str) and "hint:" in child.value:
                yield name, child.value
            yield from visit(child, name)

    yield from visit(tree, "<module>")


def static_hints() -> Iterator[Tuple[str, str, str]]:
    """(module path, function, text) for every hint literal under iotpost/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function, text in _hint_literals(tree):
            yield str(path.relative_to(PACKAGE)), function, text


class HintFlagTests(unittest.TestCase):
    def test_every_flag_in_a_shared_hint_exists_in_the_command(self):
        for command, (_, profile) in COMMANDS.items():
            known = flags_of(command)
            for where, hint in dynamic_hints(profile):
                for flag in FLAG.findall(hint or ""):
                    with self.subTest(command=command, where=where):
                        self.assertIn(flag, known, "%s's hint names %s: %s" % (command, flag, hint))

    def test_every_flag_in_a_device_command_hint_exists_in_it(self):
        from iotpost.device_api import error_for_answer
        from iotpost.platforms import load
        from iotpost.transport import Response

        for platform in (load("iotflow"), load("connectivity")):
            names = platform.profile.names
            hints = [("auth", platform.profile.auth_hint)]
            target = parse_target("https://platform.example:8443", platform.register_path, names=names)
            exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
            exc.verify_code, exc.verify_message = 20, "unable to get local issuer certificate"
            hints.append(("tls", explain_tls_failure(exc, target.host, Path("ca.pem"), names).hint))
            hints.append(("tls none", explain_tls_failure(exc, target.host, None, names).hint))
            for error in (socket.timeout(), ConnectionRefusedError(), socket.gaierror(socket.EAI_NONAME, "x")):
                hints.append((type(error).__name__, classify_network_error(error, target, 1.0).hint))
            for status in (301, 400, 401, 403, 404, 405, 409, 429, 500, 503):
                answer = Response(status, "R", {}, b'{"error": "e", "retry_after": 3}', 0.0)
                hints.append(("HTTP %d" % status, error_for_answer(answer, "doing", platform, target.url).hint))
            for url in ("ftp://x", "http://x.example", "https://u:p@x", "https://x:0"):
                for allow in (False, True):
                    try:
                        parse_target(url, platform.register_path, allow_http=allow, names=names)
                    except ConfigError as error:
                        hints.append(("target %s" % url, error.hint))
            for command in DEVICE_COMMANDS:
                known = flags_of(command)
                for where, hint in hints:
                    for flag in FLAG.findall(hint or ""):
                        with self.subTest(command=command, platform=platform.name, where=where):
                            self.assertIn(flag, known, "%s's hint names %s: %s" % (command, flag, hint))

    def test_every_flag_in_any_hint_literal_exists_where_it_can_be_printed(self):
        seen = 0
        for module, function, text in static_hints():
            if module == "profiles.py":  # each Profile names one command's flags: the dynamic sweep checks it
                continue
            if module.startswith("receiver"):
                commands: Tuple[str, ...] = ("receiver.py",)
            else:
                only = ONE_COMMAND.get((module, function), MODULE_COMMANDS.get(module, SENDERS))
                commands = (only,) if isinstance(only, str) else only
            for flag in FLAG.findall(text):
                seen += 1
                for command in commands:
                    with self.subTest(module=module, function=function, command=command):
                        self.assertIn(flag, flags_of(command), "%s %s() hint names %s, which %s lacks: %s"
                                      % (module, function, flag, command, text))
        self.assertGreater(seen, 10)  # the sweep really found the hints

    def test_the_sweeps_catch_a_wrong_flag(self):
        # The defect this guards against: tlink_push.py once suggested --base-url (it has one now, so the
        # wrong wording is one naming a flag it still lacks).
        tlink_flags = flags_of("tlink_push.py")
        wrong = explain_tls_failure(_mismatch(), "h", None, TESAIOT.names._replace(url="--certs-dir")).hint
        self.assertTrue([f for f in FLAG.findall(wrong) if f not in tlink_flags], wrong)
        right = explain_tls_failure(_mismatch(), "h", None, TLINK.names).hint
        self.assertEqual([f for f in FLAG.findall(right) if f not in tlink_flags], [])

    def test_post_https_sample_has_ca_file(self):
        self.assertIn("--ca-file", flags_of("post_https_sample.py"))


def _mismatch() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_code, exc.verify_message = 62, "Hostname mismatch"
    return exc


if __name__ == "__main__":
    unittest.main()
