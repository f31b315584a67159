"""Load and validate a TESAIoT Server-TLS credential bundle before a single byte goes out.

Usage: ``bundle = load_bundle("certs_credentials")``

A bundle is a folder with ``device_id.txt``, ``api_key.txt``, ``ca-chain.pem`` and
``endpoints.json``; an mTLS bundle has ``client_cert.pem`` and ``client_key.pem`` and needs no
``api_key.txt``. Every problem is reported naming the file, with the exit code that tells a
script whether to fetch the bundle again (66: missing) or fix it (78: malformed). Paths are
``str`` (pathlib is not imported on a send's cold path: see user_paths), spelled as ``str(Path(...))``.
"""

from __future__ import annotations

import json
import os
import re
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, List, Optional, Tuple, Union

from .errors import ConfigError, CredentialMissing
from .user_paths import path_join, path_text, user_path_text
from .records import Record

DEVICE_ID_FILE = "device_id.txt"
API_KEY_FILE = "api_key.txt"
CA_FILE = "ca-chain.pem"
ENDPOINTS_FILE = "endpoints.json"
CLIENT_CERT_FILE = "client_cert.pem"
CLIENT_KEY_FILE = "client_key.pem"
ENDPOINT_KEYS = ("ingest_base_url", "api_base_url")  # read in this order
CERTS_DIR_ENV = "IOTPOST_CERTS_DIR"  # every command's name for it
LEGACY_CERTS_DIR_ENV = "TESAIOT_CERTS_DIR"  # post_https_sample.py's, still read when the other is not set

_HEX = frozenset("0123456789abcdefABCDEF")


def is_uuid(text: str) -> bool:
    """8-4-4-4-12 hex digits (no regex: every send checks one, and compiling costs more than this)."""
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(ch in _HEX for part in parts for ch in part)
_DOWNLOAD_HINT = "download the Server-TLS bundle for this device from the platform again"


class Bundle(Record):
    """What a credential bundle holds. ``api_key`` is kept out of repr so it never lands in a log."""

    certs_dir: str
    device_id: str
    api_key: Optional[str]  # None: an mTLS bundle without api_key.txt
    ca_file: Optional[str]  # None: the system's trust store (a platform behind a public CA)
    base_url: str
    warnings: Tuple[str, ...] = ()
    client_cert: Optional[str] = None  # mTLS: presented to the server with client_key
    client_key: Optional[str] = None

    def __repr__(self) -> str:
        return ("Bundle(certs_dir=%r, device_id=%r, api_key=<redacted>, ca_file=%r, base_url=%r, client_cert=%r)"
                % (self.certs_dir, self.device_id, self.ca_file, self.base_url, self.client_cert))


BUNDLE_DIR_NAME = "certs_credentials"


def default_certs_dir(script_dir: Optional[Union[str, Path]], environ: Optional[dict] = None,
                      cwd: Optional[Union[str, Path]] = None) -> str:
    """The bundle folder when --certs-dir is not given, the same for a clone, iotpost.pyz and pip:

    $IOTPOST_CERTS_DIR (or the seed's $TESAIOT_CERTS_DIR) if set, else ./certs_credentials in the
    current folder if it exists, else certs_credentials/ beside the scripts (a clone's sample bundle;
    an archive or site-packages has none), else ./certs_credentials, so the error names where to put it.
    """
    env = os.environ if environ is None else environ
    configured = env.get(CERTS_DIR_ENV, "").strip() or env.get(LEGACY_CERTS_DIR_ENV, "").strip()
    if configured:
        return user_path_text(configured)
    here = path_join(path_text(os.getcwd() if cwd is None else cwd), BUNDLE_DIR_NAME)
    if os.path.isdir(here) or script_dir is None:
        return here
    beside = path_join(path_text(script_dir), BUNDLE_DIR_NAME)
    return beside if os.path.isdir(beside) else here


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8-sig") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CredentialMissing(
            "%s is missing (%s), while loading the credential bundle" % (path, what),
            hint=_DOWNLOAD_HINT + ", or pass --certs-dir",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError("%s is not UTF-8 text, while loading the credential bundle" % path,
                          hint=_DOWNLOAD_HINT) from None
    except OSError as exc:
        raise CredentialMissing(
            "%s cannot be read (%s), while loading the credential bundle" % (path, exc.strerror or exc),
            hint="check the file's permissions and that it belongs to the user running the tool",
        ) from None


def parse_device_id(text: str, source: str) -> str:
    """A device id file holds one UUID; whitespace around it is ignored."""
    value = text.strip()
    if not is_uuid(value):
        raise ConfigError(
            "%s does not hold a device UUID, while loading the credential bundle" % source,
            hint="it should look like 05f8968a-b400-4727-9678-b53cb0889fce; " + _DOWNLOAD_HINT,
        )
    return value.lower()


def parse_api_key(text: str, source: str) -> str:
    """An API key file holds one token on one line (the trailing newline is stripped)."""
    value = text.strip()
    if not value or any(ch.isspace() for ch in value):
        raise ConfigError(
            "%s must hold exactly one API key on one line, while loading the credential bundle"
            % source,
            hint=_DOWNLOAD_HINT,
        )
    return value


def _near_key(name: str) -> Optional[str]:
    """The key we read that ``name`` is probably a misspelling of ("ingestBaseUrl", "ingest_base_ur1").

    The bar is high (difflib ratio 0.9 after folding case, '-' and camelCase) so the other keys a
    real bundle may carry (an MQTT host, an mTLS URL) are never warned about on every run.
    """
    folded = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name.strip()).lower().replace("-", "_").replace(" ", "_")
    if folded in ENDPOINT_KEYS:
        return folded
    # difflib's ratio is at most 2*min(len)/(len a + len b): most keys are ruled out without importing it.
    if not any(2 * min(len(folded), len(k)) >= 0.9 * (len(folded) + len(k)) for k in ENDPOINT_KEYS):
        return None
    import difflib

    close = difflib.get_close_matches(folded, ENDPOINT_KEYS, n=1, cutoff=0.9)
    return close[0] if close else None


def parse_endpoints(text: str, source: str, warnings: Optional[List[str]] = None) -> str:
    """The base URL from endpoints.json: ingest_base_url, else api_base_url.

    A file with neither is an error naming the keys it does have (a misspelled key must not send
    data to some default platform); a key that looks like a misspelling of one we read is warned
    about (appended to ``warnings``) even when another usable key is present.
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(
            "%s is not valid JSON (%s), while loading the credential bundle" % (source, exc),
            hint=_DOWNLOAD_HINT,
        ) from None
    if not isinstance(doc, dict):
        raise ConfigError("%s must be a JSON object, while loading the credential bundle" % source,
                          hint=_DOWNLOAD_HINT)
    near = {key: _near_key(key) for key in doc if key not in ENDPOINT_KEYS}
    near = {key: known for key, known in near.items() if known}
    url = None
    for name in ENDPOINT_KEYS:
        value = doc.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ConfigError("%s: %s must be a string URL, while loading the credential bundle"
                              % (source, name), hint=_DOWNLOAD_HINT)
        url = url or value.strip()
    if url is None:
        keys = ", ".join(sorted(doc)) or "no keys at all"
        guesses = "; ".join('"%s" should be "%s"' % kv for kv in sorted(near.items()))
        raise ConfigError(
            "%s sets none of the keys we read (%s), only: %s, while loading the credential bundle"
            % (source, ", ".join(ENDPOINT_KEYS), keys),
            hint=(guesses + "; or " if guesses else "") + 'set "ingest_base_url": "https://..." there, or pass '
            "--base-url; " + _DOWNLOAD_HINT,
        )
    if warnings is not None:
        for key, known in sorted(near.items()):
            warnings.append('%s: key "%s" is not read; did you mean "%s"? (using %s)' % (source, key, known, url))
    return url


def read_secret_file(path: Union[str, Path], what: str) -> bytes:
    """A shared secret kept in a file: its bytes without surrounding whitespace (a trailing newline).

    Secrets come from files (or the environment), never from a flag, so they stay out of shell
    history and ``ps``. Missing or unreadable is 66, empty is 78.
    """
    try:
        with open(path, "rb") as fh:
            secret = fh.read().strip()
    except FileNotFoundError:
        raise CredentialMissing("%s %s is missing" % (what, path)) from None
    except OSError as exc:
        raise CredentialMissing("%s %s cannot be read (%s)" % (what, path, exc.strerror or exc),
                                hint="check the file's permissions and that it belongs to the user running "
                                "the tool") from None
    if not secret:
        raise ConfigError("%s %s is empty" % (what, path))
    return secret


def key_permission_warning(path: Union[str, Path]) -> Optional[str]:
    """On POSIX, a key readable by group or others is worth a warning; a world-writable one is refused.

    Anyone on the machine could replace a world-writable key (or a password file) with their own:
    78. Group-writable only warns: git records no modes, so a fresh clone under umask 002 has
    group-writable files, and the demo and tests must still run there.
    """
    if os.name != "posix":
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & stat.S_IWOTH:
        raise ConfigError("%s is writable by every user of this machine, so it cannot be trusted; refusing to "
                          "use it" % path, hint="run: chmod 600 %s (and check that nobody changed it)" % path)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return "%s is readable by group or others; run: chmod 600 %s" % (path, path)
    return None


def _client_pair(certs_dir: str, client_cert: Optional[Union[str, Path]],
                 client_key: Optional[Union[str, Path]]) -> Tuple[Optional[str], Optional[str]]:
    """The client certificate and key to present (mTLS), or (None, None) for a Server-TLS bundle.

    A flag names one file of the pair; the other comes from the bundle. Half a pair is a missing
    file (66) naming the half that is not there.
    """
    cert = path_text(client_cert) if client_cert is not None else path_join(certs_dir, CLIENT_CERT_FILE)
    key = path_text(client_key) if client_key is not None else path_join(certs_dir, CLIENT_KEY_FILE)
    if client_cert is None and client_key is None and not (os.path.exists(cert) or os.path.exists(key)):
        return None, None
    for path, what, flag in ((cert, "client certificate", "--client-cert"), (key, "client key", "--client-key")):
        if not os.path.isfile(path):
            raise CredentialMissing(
                "%s is missing (the %s of the mTLS pair), while loading the credential bundle" % (path, what),
                hint="an mTLS bundle holds both %s and %s: download it again, or pass %s"
                % (CLIENT_CERT_FILE, CLIENT_KEY_FILE, flag),
            )
    return cert, key


def bundle_platform(certs_dir: Union[str, Path]) -> Optional[str]:
    """The ``"platform"`` endpoints.json names (checked: an unknown one is 78), or None.

    A missing or unreadable file says nothing here: load_bundle reports it with the right code.
    """
    from .platforms import platform_from_endpoints

    path = path_join(path_text(certs_dir), ENDPOINTS_FILE)
    try:
        with open(path, encoding="utf-8-sig") as fh:
            doc = json.loads(fh.read())
    except (OSError, ValueError, RecursionError):
        return None
    return platform_from_endpoints(doc, path)


def load_bundle(
    certs_dir: Union[str, Path],
    device_id: Optional[str] = None,
    base_url: Optional[str] = None,
    ca_file: Optional[Union[str, Path]] = None,
    client_cert: Optional[Union[str, Path]] = None,
    client_key: Optional[Union[str, Path]] = None,
    device_id_parser: Optional[Callable[[str, str], str]] = None,
    public_ca: bool = False,
) -> Bundle:
    """Read and check every file of the bundle; overrides skip the file they replace.

    With a client certificate (the bundle's or the flags') api_key.txt is optional: mTLS
    authenticates the device; a key that is there is sent too. ``device_id_parser`` checks the id
    the platform's way (default: TESAIoT's UUID in the file, --device-id free-form); with ``public_ca`` a bundle without ca-chain.pem
    trusts the system's store instead (still verified).
    """
    certs_dir = path_text(certs_dir)
    if not os.path.isdir(certs_dir):
        raise CredentialMissing(
            "credential folder %s %s, while loading the credential bundle"
            % (certs_dir, "is a file, not a folder" if os.path.exists(certs_dir) else "does not exist"),
            hint="pass --certs-dir or set %s to the folder holding device_id.txt, api_key.txt, "
            "ca-chain.pem and endpoints.json" % CERTS_DIR_ENV,
        )
    if device_id is not None:
        device = device_id.strip()
        if not device:
            raise ConfigError("--device-id is empty")
        if device_id_parser is not None:
            device = device_id_parser(device, "--device-id")
    else:
        path = path_join(certs_dir, DEVICE_ID_FILE)
        device = (device_id_parser or parse_device_id)(_read_text(path, "the device id"), path)
    cert, key = _client_pair(certs_dir, client_cert, client_key)
    key_path = path_join(certs_dir, API_KEY_FILE)
    api_key: Optional[str] = None
    if cert is None or os.path.exists(key_path):
        api_key = parse_api_key(_read_text(key_path, "the API key"), key_path)
    ca: Optional[str]
    if ca_file is None:
        ca = path_join(certs_dir, CA_FILE)
        if public_ca and not os.path.exists(ca):
            ca = None  # the system's trust store; --verbose says so
        else:
            _read_text(ca, "the CA chain that verifies the server")  # missing -> 66; content checked by TLS
    else:
        ca = path_text(ca_file)
    warnings: List[str] = []
    if base_url is None:
        path = path_join(certs_dir, ENDPOINTS_FILE)
        url = parse_endpoints(_read_text(path, "the platform's endpoints"), path, warnings)
    else:
        url = base_url.strip()
    for secret in ([key_path] if api_key is not None else []) + ([key] if key is not None else []):
        warning = key_permission_warning(secret)
        if warning:
            warnings.append(warning)
    return Bundle(
        certs_dir=certs_dir,
        device_id=device,
        api_key=api_key,
        ca_file=ca,
        base_url=url,
        warnings=tuple(warnings),
        client_cert=cert,
        client_key=key,
    )
