"""Fixtures the whole suite shares: paths, a twin per test, credential bundles, TLS clients.

Usage: ``twin = start_test_twin(self); bundle = make_bundle(temp_dir(self), twin=twin)``

Every twin started here is stopped by addCleanup (shutdown -> join -> server_close), so nothing
is left listening after a test; temp dirs are removed the same way.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import tempfile
import unittest
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from iotpost.receiver import FaultPlan, TwinServer, start_twin

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CERTDATA = PROJECT_ROOT / "tests" / "certdata"
SAMPLE_BUNDLE = PROJECT_ROOT / "certs_credentials"
CA_PEM = CERTDATA / "ca.pem"
LOCALHOST_PEM = CERTDATA / "localhost.pem"
LOCALHOST_KEY = CERTDATA / "localhost.key"

# A device every test twin knows (besides the sample bundle's).
TEST_DEVICE_ID = "0b6c8f3e-5d2a-4e1b-9c7d-3f4a5b6c7d8e"
TEST_API_KEY = "tesa_ak_TWINTEST_0123456789abcdef"
OTHER_DEVICE_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
OTHER_API_KEY = "tesa_ak_TWINTEST_other_device_key"

__all__ = [
    "CA_PEM", "CERTDATA", "FaultPlan", "LOCALHOST_KEY", "LOCALHOST_PEM", "OTHER_API_KEY",
    "OTHER_DEVICE_ID", "PROJECT_ROOT", "SAMPLE_BUNDLE", "TEST_API_KEY", "TEST_DEVICE_ID",
    "TwinTestCase", "client_context", "connect", "make_bundle", "request_json", "start_test_twin",
    "raw_exchange", "temp_dir", "wait_until",
]


def start_test_twin(testcase: unittest.TestCase, **kwargs: Any) -> TwinServer:
    """A twin with localhost.pem on 127.0.0.1:<free port>, the test devices registered, stopped at cleanup.

    Any start_twin() keyword overrides the defaults; ``devices`` adds to the test devices.
    """
    devices = {TEST_DEVICE_ID: TEST_API_KEY, OTHER_DEVICE_ID: OTHER_API_KEY}
    devices.update(kwargs.pop("devices", None) or {})
    kwargs.setdefault("bundles", (SAMPLE_BUNDLE,))
    kwargs.setdefault("certfile", LOCALHOST_PEM)
    kwargs.setdefault("keyfile", LOCALHOST_KEY)
    twin = start_twin(devices=devices, **kwargs)
    testcase.addCleanup(twin.stop)
    return twin


def temp_dir(testcase: unittest.TestCase) -> Path:
    """A fresh folder removed at cleanup."""
    path = Path(tempfile.mkdtemp(prefix="iotpost-test-"))
    testcase.addCleanup(shutil.rmtree, str(path), True)
    return path


def make_bundle(
    directory: Union[str, Path],
    *,
    ca: Union[str, Path] = CA_PEM,
    url: Optional[str] = None,
    device_id: str = TEST_DEVICE_ID,
    api_key: str = TEST_API_KEY,
    twin: Optional[TwinServer] = None,
) -> Path:
    """Write a complete Server-TLS credential bundle into ``directory`` and return its path.

    ``url`` defaults to the twin's URL (a twin given here also gets the device registered),
    else https://localhost:8443.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if url is None:
        url = twin.url if twin is not None else "https://localhost:8443"
    (folder / "device_id.txt").write_text(device_id + "\n", encoding="utf-8")
    key_file = folder / "api_key.txt"
    key_file.write_text(api_key + "\n", encoding="utf-8")
    os.chmod(str(key_file), 0o600)
    shutil.copyfile(str(ca), str(folder / "ca-chain.pem"))
    (folder / "endpoints.json").write_text(
        json.dumps({"ingest_base_url": url, "api_base_url": url}, indent=2) + "\n", encoding="utf-8")
    if twin is not None:
        twin.register_device(device_id, api_key)
    return folder


def client_context(ca: Union[str, Path] = CA_PEM) -> ssl.SSLContext:
    """What a correct sender uses: CERT_REQUIRED, hostname check, TLS 1.2+, our test CA only."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(str(ca))
    return context


def connect(twin: TwinServer, *, timeout: float = 5.0,
            context: Optional[ssl.SSLContext] = None) -> http.client.HTTPConnection:
    """A keep-alive connection to the twin (HTTPS trusting the test CA, or HTTP for tls=False)."""
    parts = urlsplit(twin.url)
    host = parts.hostname or "localhost"
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, parts.port, timeout=timeout,
                                           context=context or client_context())
    return http.client.HTTPConnection(host, parts.port, timeout=timeout)


def request_json(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[int, Any, http.client.HTTPResponse]:
    """One request on ``conn``; returns (status, parsed JSON body or None, response).

    A dict/list body is sent as JSON with Content-Type application/json; bytes go as they are.
    """
    all_headers = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode("utf-8")
        all_headers.setdefault("Content-Type", "application/json")
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = b""
    conn.request(method, path, body=body, headers=all_headers)
    response = conn.getresponse()
    raw = response.read()
    try:
        parsed = json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        parsed = None
    return response.status, parsed, response


class TwinTestCase(unittest.TestCase):
    """Base class with a twin helper; subclasses call ``self.start_twin()`` when they need one."""

    def start_twin(self, **kwargs: Any) -> TwinServer:
        return start_test_twin(self, **kwargs)

    def connect(self, twin: TwinServer, **kwargs: Any) -> http.client.HTTPConnection:
        """A connection closed at cleanup."""
        conn = connect(twin, **kwargs)
        self.addCleanup(conn.close)
        return conn


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> bool:
    """Poll ``predicate`` until it is true (for counters the server updates after the client returns)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def raw_exchange(twin: TwinServer, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send raw bytes (TLS-wrapped for an https twin) and read until the server closes.

    For requests http.client refuses to make, such as a POST without Content-Length.
    """
    import socket

    parts = urlsplit(twin.url)
    host = parts.hostname or "localhost"
    sock = socket.create_connection((host, parts.port), timeout=timeout)
    try:
        if parts.scheme == "https":
            sock = client_context().wrap_socket(sock, server_hostname=host)
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        sock.close()
