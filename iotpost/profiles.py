"""Platform profiles: what differs between the platforms we send to, kept out of the transport.

Usage: ``headers = TESAIOT.headers(body, idempotency_key, credentials)``

A profile names its default endpoint, how a request is authenticated and what content type it
carries. Secrets are applied here at send time, so the spool never stores one.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Tuple

from . import __version__
from .target import SettingNames
from .records import Record

USER_AGENT = "iotpost/%s" % __version__

if TYPE_CHECKING:
    Headers = List[Tuple[str, str]]
else:
    Headers = list  # the alias only matters to type checkers


class Credentials(Record):
    """Secrets a profile may use; never printed (see output.Redactor)."""

    api_key: Optional[str] = None
    hmac_secret: Optional[bytes] = None

    def secrets(self) -> List[str]:
        found = []
        if self.api_key:
            found.append(self.api_key)
        if self.hmac_secret:
            try:
                found.append(self.hmac_secret.decode("utf-8").strip())
            except UnicodeDecodeError:
                pass
        return [s for s in found if s]


class Profile(Record):
    name: str
    endpoint: str
    auth: Callable[[bytes, Credentials], Headers]
    content_type: str = "application/json"
    # What to check when the platform answers 401/403: the credential differs per platform.
    auth_hint: str = "check the credentials"
    # How the command for this platform names its URL and CA settings (hints name only real flags).
    names: SettingNames = SettingNames(url="the URL", ca="the CA file")
    # How a 401 is told: what the platform refused, and (message, hint) when nothing was sent to
    # refuse (an unsigned TLINK push to a webhook that checks signatures).
    refused: str = "the platform rejected the credentials"
    refused_without_credentials: Optional[Tuple[str, str]] = None

    def refusal(self, creds: Credentials) -> Tuple[str, str]:
        """(what was refused, hint) for a 401, worded for this platform and what this run sent."""
        if self.refused_without_credentials is not None and not creds.secrets():
            return self.refused_without_credentials
        return self.refused, self.auth_hint

    def headers(self, body: bytes, idempotency_key: str, creds: Credentials) -> Headers:
        """Every header a send carries; the same key on every attempt of one payload."""
        return [("Content-Type", self.content_type), ("Idempotency-Key", idempotency_key)] + self.auth(
            body, creds
        )


def api_key_header(name: str) -> Callable[[bytes, Credentials], Headers]:
    def auth(body: bytes, creds: Credentials) -> Headers:
        return [(name, creds.api_key)] if creds.api_key else []

    return auth


def tlink_signature(body: bytes, secret: bytes) -> str:
    """``sha256=`` + lowercase hex HMAC-SHA256 of the exact body bytes sent."""
    import hashlib  # only TLINK signs: keep hashlib off the TESAIoT start-up path
    import hmac

    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _tlink_auth(body: bytes, creds: Credentials) -> Headers:
    if not creds.hmac_secret:
        return []
    return [("X-TLink-Signature", tlink_signature(body, creds.hmac_secret))]


TESAIOT = Profile("tesaiot", "/api/v1/telemetry", api_key_header("X-API-KEY"),
                  auth_hint="check api_key.txt and device_id.txt: are they this device's current pair? "
                  "download the bundle again if the key was rotated",
                  names=SettingNames(url="--base-url / endpoints.json", ca="--ca-file / the bundle's ca-chain.pem",
                                     endpoint="--endpoint", cleartext="the API key would travel unencrypted",
                                     example_url="https://tesaiot.com",
                                     url_credentials_hint="credentials belong in the bundle, not in the URL"))
TLINK = Profile("tlink", "/api/webhooks/tlink", _tlink_auth,
                auth_hint="check --secret-file / $TLINK_WEBHOOK_SECRET: it must hold the webhook's shared "
                "secret exactly (a trailing newline is ignored)",
                names=SettingNames(url="--url / $TLINK_WEBHOOK_URL", ca="--ca-file / the bundle's ca-chain.pem",
                                   cleartext="the push would travel unencrypted",
                                   example_url="https://hooks.example.com/api/webhooks/tlink",
                                   url_credentials_hint="the webhook secret belongs in --secret-file or "
                                   "$TLINK_WEBHOOK_SECRET, not in the URL"),
                refused="the webhook refused the push's signature",
                refused_without_credentials=(
                    "the webhook refused the unsigned push",
                    "this webhook checks signatures: give its shared secret with --secret-file PATH or "
                    "$TLINK_WEBHOOK_SECRET"))
PROFILES = {p.name: p for p in (TESAIOT, TLINK)}

# Header names whose values are secrets and are always shown redacted.
SECRET_HEADERS = {"x-api-key", "authorization"}
