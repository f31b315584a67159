"""The one place TLS is configured, and the one place TLS failures are explained.

Usage: ``ctx = build_ssl_context("certs_credentials/ca-chain.pem")``

Verification is always on: ``PROTOCOL_TLS_CLIENT`` means CERT_REQUIRED and hostname checking,
the only trust anchors are the bundle's CA file, and TLS 1.2 is the floor. There is deliberately
no way to turn any of that off; to trust a server, put its CA in the bundle.
"""

from __future__ import annotations

import os
import ssl

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing on a send's cold path
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Callable, List, Optional, Sequence, Tuple, Union

from .errors import ConfigError, IotPostError, TLSVerifyError, TransientError
from .target import GENERIC_NAMES, SettingNames
from .user_paths import path_text


class ClientContext(ssl.SSLContext):
    """A client context that also carries what the transport checks after each handshake.

    ``pins``: the accepted SPKI pins (base64 SHA-256), empty for none; ``client_cert``: the
    certificate presented (mTLS), named in errors; ``on_connect``: called with the server key's pin
    after each handshake (--verbose prints it). The transport reads them with getattr, so a plain
    SSLContext still works.
    """

    pins: Tuple[str, ...] = ()
    client_cert: Optional[str] = None
    on_connect: Optional[Callable[[str, str, Optional[str]], None]] = None  # (pin, TLS version, notAfter)


def expiry_day(not_after: str) -> str:
    """A certificate's ``notAfter`` ("Dec 31 23:59:59 2099 GMT") as a UTC day, 2099-12-31."""
    import time

    return time.strftime("%Y-%m-%d", time.gmtime(ssl.cert_time_to_seconds(not_after)))


def build_ssl_context(
    cafile: Optional[Union[str, Path]],
    certfile: Optional[Union[str, Path]] = None,
    keyfile: Optional[Union[str, Path]] = None,
    password: Optional[bytes] = None,
    pins: Sequence[str] = (),
) -> ClientContext:
    """A client context trusting only ``cafile`` (None: the system's trust store, for a platform behind a
    public CA; verification and the name check stay on); a client certificate is optional (mTLS)."""
    ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cafile is None:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        else:
            ctx.load_verify_locations(cafile=str(cafile))
    except FileNotFoundError:
        from .errors import CredentialMissing

        raise CredentialMissing("%s is missing, while loading the CA certificate" % cafile) from None
    except (ssl.SSLError, ValueError, OSError) as exc:
        raise ConfigError(
            "%s holds no usable CA certificate (%s), while loading the CA certificate"
            % (cafile, getattr(exc, "reason", None) or exc),
            hint="it must be PEM text starting with -----BEGIN CERTIFICATE-----: the CA that signs the "
            "server's certificate (a bundle's ca-chain.pem, or the file the server's operator gives)",
        ) from None
    if certfile is not None:
        ctx.client_cert = path_text(certfile)  # named in errors as str(Path(certfile)) would be
        load_client_certificate(ctx, ctx.client_cert, path_text(keyfile) if keyfile else None, password)
    ctx.pins = tuple(pins)
    return ctx


_KEY_HINT = "client_key.pem must be the private key made with client_cert.pem (download the mTLS bundle again)"


def load_client_certificate(ctx: ssl.SSLContext, certfile: Union[str, Path], keyfile: Optional[Union[str, Path]],
                            password: Optional[bytes]) -> None:
    """Present ``certfile`` (mTLS); each problem names its file: missing 66, unusable or mismatched 78.

    An encrypted key without a password is refused here: OpenSSL would otherwise ask on the
    terminal, and a cron job would hang there.
    """
    from .errors import CredentialMissing

    for path, what in ((certfile, "the client certificate"), (keyfile, "the client key")):
        if path is not None and not os.path.isfile(path):
            raise CredentialMissing("%s %s is missing, while loading the client certificate" % (what, path),
                                    hint="pass --client-cert and --client-key, or download the mTLS bundle again")
    key_path = keyfile or certfile
    try:
        with open(key_path, "rb") as fh:
            key_text = fh.read()
    except OSError as exc:
        raise CredentialMissing("%s cannot be read (%s), while loading the client key"
                                % (key_path, exc.strerror or exc),
                                hint="check the file's permissions and that it belongs to the user running "
                                "the tool") from None
    encrypted = b"ENCRYPTED" in key_text
    if encrypted and password is None:
        raise ConfigError("%s is encrypted and no password was given, while loading the client key" % key_path,
                          hint="put the password in a file passed with --client-key-password-file, or in "
                          "the %s environment variable" % CLIENT_KEY_PASSWORD_ENV)

    def give_password() -> bytes:  # never None: OpenSSL must not fall back to prompting
        return password or b""

    try:
        ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, password=give_password)
    except (ssl.SSLError, ValueError, OSError) as exc:
        said = ("%s %s" % (getattr(exc, "reason", "") or "", exc)).upper()
        if "KEY_VALUES_MISMATCH" in said or "KEY VALUES MISMATCH" in said:
            raise ConfigError("%s is not the private key of %s (a mismatched pair), while loading the client "
                              "certificate" % (key_path, certfile), hint=_KEY_HINT) from None
        if encrypted and ("BAD_DECRYPT" in said or "BAD DECRYPT" in said or password is not None):
            raise ConfigError("%s cannot be decrypted with the password given (%s), while loading the client key"
                              % (key_path, getattr(exc, "reason", None) or exc),
                              hint="check --client-key-password-file or %s" % CLIENT_KEY_PASSWORD_ENV) from None
        raise ConfigError("%s / %s cannot be used as a client certificate and key (%s), while loading the "
                          "client certificate" % (certfile, key_path, getattr(exc, "reason", None) or exc),
                          hint="both must be PEM: the certificate (-----BEGIN CERTIFICATE-----) and its "
                          "private key; " + _KEY_HINT) from None


CLIENT_KEY_PASSWORD_ENV = "IOTPOST_CLIENT_KEY_PASSWORD"


# -- public-key pinning (curl's --pinnedpubkey sha256//...) -------------------------------------


def _der_item(der: bytes, at: int) -> Tuple[int, int, int]:
    """(tag, start of content, end of item) of the DER item starting at ``at``; ValueError if cut short."""
    if at + 2 > len(der):
        raise ValueError("truncated DER")
    tag, first = der[at], der[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[at:at + count], "big")
        at += count
    if at + length > len(der):
        raise ValueError("truncated DER")
    return tag, at, at + length


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate (the stdlib has no extractor).

    Certificate = SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... } (RFC 5280 4.1).
    """
    tag, start, _ = _der_item(cert_der, 0)
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, at, tbs_end = _der_item(cert_der, start)
    if tag != 0x30:
        raise ValueError("not a DER certificate")
    tag, _, end = _der_item(cert_der, at)
    if tag == 0xA0:  # explicit version
        at = end
    for _field in ("serialNumber", "signature", "issuer", "validity", "subject"):
        _, _, at = _der_item(cert_der, at)
    tag, _, end = _der_item(cert_der, at)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("no SubjectPublicKeyInfo where RFC 5280 puts it")
    return cert_der[at:end]


def spki_pin(cert_der: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what curl's --pinnedpubkey sha256//... compares."""
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(spki_der(cert_der)).digest()).decode("ascii")


def parse_pins(text: str) -> List[str]:
    """Pins from one --pin-sha256 value: BASE64, sha256//BASE64, or a ';'-separated list of them (curl's)."""
    import base64
    import binascii

    pins = []
    for part in text.split(";"):
        value = part.strip()
        if value.lower().startswith("sha256//"):
            value = value[len("sha256//"):]
        if not value:
            continue
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError("%r is not a SHA-256 public-key pin (base64 of 32 bytes, as "
                             "'sha256//Q10K...OgI=')" % part.strip())
        pins.append(base64.b64encode(raw).decode("ascii"))
    if not pins:
        raise ValueError("%r holds no pin" % text)
    return pins


def check_pin(cert_der: Optional[bytes], pins: Sequence[str], where: str) -> str:
    """The server key's pin; a TLSVerifyError (78) when pins are set and it is not among them."""
    if not cert_der:
        raise TLSVerifyError("the server %s presented no certificate, while checking --pin-sha256" % where)
    pin = spki_pin(cert_der)
    if pins and pin not in pins:
        raise TLSVerifyError(
            "the server's public key (sha256//%s) matches no --pin-sha256, while verifying the server %s; "
            "nothing was sent" % (pin, where),
            hint="the server's key changed or this is not the server you pinned; if its operator confirms a "
            "new key, pin that one (--verbose prints the pin of the key a server presents)",
        )
    return pin


# OpenSSL alert reasons a server sends when it wants a client certificate and got none, or refuses
# ours. With TLS 1.3 they arrive after our handshake has finished: on the first read.
_NO_CLIENT_CERT_REASONS = ("CERTIFICATE_REQUIRED", "PEER_DID_NOT_RETURN_A_CERTIFICATE")
_CLIENT_CERT_REASONS = _NO_CLIENT_CERT_REASONS + (
    "ALERT_BAD_CERTIFICATE", "ALERT_UNKNOWN_CA", "ALERT_CERTIFICATE_EXPIRED", "ALERT_CERTIFICATE_REVOKED",
    "ALERT_UNSUPPORTED_CERTIFICATE", "ALERT_CERTIFICATE_UNKNOWN", "ALERT_ACCESS_DENIED")


def client_certificate_refused(exc: BaseException, where: str,
                               client_cert: Optional[Union[str, Path]]) -> Optional[IotPostError]:
    """A 78 speaking of the client certificate when ``exc`` is a server's alert about it, else None."""
    if not isinstance(exc, ssl.SSLError) or isinstance(exc, ssl.SSLCertVerificationError):
        return None
    reason = getattr(exc, "reason", None) or ""
    said = ("%s %s" % (reason, exc)).upper()
    if not any(r in said for r in _CLIENT_CERT_REASONS):
        return None
    return client_certificate_error(where, client_cert, reason or str(exc))


def client_certificate_error(where: str, client_cert: Optional[Union[str, Path]], detail: str,
                             during: str = "negotiating TLS") -> IotPostError:
    """The server wants a client certificate (mTLS) and got none, or refused ours."""
    if client_cert is None:
        return ConfigError(
            "%s requires a client certificate and none was presented (%s), while %s" % (where, detail, during),
            hint="this is an mTLS endpoint: put client_cert.pem and client_key.pem in the bundle (the mTLS "
            "bundle), or pass --client-cert and --client-key; or use the platform's Server-TLS URL",
        )
    return ConfigError(
        "%s refused the client certificate %s (%s), while %s" % (where, client_cert, detail, during),
        hint="the server does not accept this certificate: it may have expired (openssl x509 -noout -dates "
        "-in %s), be revoked, or come from a CA this server does not trust; download the mTLS bundle again"
        % client_cert,
    )


# OpenSSL reasons meaning "no TLS version both sides accept" (server too old, or client too new).
_VERSION_REASONS = ("UNSUPPORTED_PROTOCOL", "TLSV1_ALERT_PROTOCOL_VERSION", "WRONG_SSL_VERSION",
                    "NO_PROTOCOLS_AVAILABLE", "VERSION_TOO_LOW", "TLSV1_ALERT_INSUFFICIENT_SECURITY")
# ... and "what came back is not TLS at all" (plain HTTP, SSH, a captive portal on the port).
_NOT_TLS_REASONS = ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE",
                    "UNKNOWN_PROTOCOL", "RECORD_LENGTH_MISMATCH")


def certificate_names(peer_cert: dict) -> List[str]:
    """The DNS names and IP addresses a certificate (``getpeercert()``) is valid for, as a user types them."""
    import ipaddress

    names: List[str] = []
    for kind, value in peer_cert.get("subjectAltName", ()):
        if kind == "DNS":
            names.append(value)
        elif kind == "IP Address":
            try:  # older OpenSSL spells ::1 as 0:0:0:0:0:0:0:1 (with a newline on some builds)
                names.append(str(ipaddress.ip_address(value.strip())))
            except ValueError:
                names.append(value.strip())
    if not names:  # no SAN: only then does the subject's CN count (and modern clients ignore it)
        names = [value for rdn in peer_cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    return list(dict.fromkeys(names))


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def explain_tls_failure(exc: ssl.SSLError, host: str, cafile: Optional[Union[str, Path]],
                        names: SettingNames = GENERIC_NAMES, cert_names: Optional[List[str]] = None,
                        port: Optional[int] = None,
                        client_cert: Optional[Union[str, Path]] = None) -> IotPostError:
    """Turn a failed handshake into one line a field engineer can act on.

    Certificate failures are configuration (78) and say which check failed; ``cert_names`` (from a
    diagnostic handshake without the name check) lets a name mismatch list what the certificate
    does name. A refused TLS version or an answer that is not TLS is also 78, and says so: no
    certificate was involved. A handshake the other side hung up on (a proxy with no backend, a
    restarting server) may work next time (75). ``names`` words the hints in this command's flags.
    """
    where = host if port is None else "%s:%d" % ("[%s]" % host if ":" in host else host, port)
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return TransientError("%s closed the connection during the TLS handshake (%s)"
                              % (where, exc.__class__.__name__),
                              hint="the server or a proxy in front of it is restarting or overloaded; "
                              "it is retried")
    ca = str(cafile) if cafile else "the CA file"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        detail = getattr(exc, "verify_message", None) or str(exc)
        # 62: host name mismatch, 64: IP address mismatch (OpenSSL's X509_V_ERR_*_MISMATCH).
        if code in (62, 63, 64) or "mismatch" in detail.lower():
            what = "IP address" if code == 64 or _is_ip(host) else "host"
            if cert_names:
                holds = "it is valid only for %s" % ", ".join(cert_names[:8] + (["..."] if len(cert_names) > 8 else []))
            else:
                holds = detail
            return TLSVerifyError(
                "the server's certificate is not valid for the %s %s (%s): a name mismatch, while verifying "
                "the server %s" % (what, host, holds, where),
                hint="connect with a name the certificate holds (check %s), or have the server's "
                "certificate include %s" % (names.url, host),
            )
        if code == 10 or "expired" in detail.lower():
            return TLSVerifyError(
                "the server's certificate has expired, while verifying the server %s" % where,
                hint="the server must renew its certificate; check this machine's clock too",
            )
        if code == 9 or "not yet valid" in detail.lower():
            return TLSVerifyError(
                "the server's certificate is not yet valid, while verifying the server %s" % where,
                hint="check this machine's clock (a Raspberry Pi without RTC may boot in 1970)",
            )
        if not cafile:
            return TLSVerifyError(
                "the server's certificate is not signed by a CA this system trusts (%s), while verifying the "
                "server %s (the bundle has no ca-chain.pem, so the system's trust store was used)" % (detail, where),
                hint="put the platform's CA in the bundle as ca-chain.pem, or give it with %s" % names.ca,
            )
        return TLSVerifyError(
            "the server's certificate is not signed by %s (%s), while verifying the server %s"
            % (ca, detail, where),
            hint="is %s the CA of this platform? to trust a server, put its CA there (%s)" % (ca, names.ca),
        )
    refused = client_certificate_refused(exc, where, client_cert)
    if refused is not None:
        return refused
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    said = ("%s %s" % (reason, exc)).upper()
    if any(r in said for r in _VERSION_REASONS):
        return ConfigError(
            "%s offers only TLS versions older than 1.2, the minimum accepted (%s), while negotiating TLS"
            % (where, reason),
            hint="the server must support TLS 1.2 or newer; if this port is not the platform's HTTPS port, "
            "check the port in %s" % names.url,
        )
    if any(r in said for r in _NOT_TLS_REASONS):
        return ConfigError(
            "%s did not answer in TLS (%s): the port speaks another protocol, such as plain HTTP, "
            "while starting TLS" % (where, reason),
            hint="check the scheme and port in %s: https:// needs the server's HTTPS port (443 by default)"
            % names.url,
        )
    return ConfigError(
        "TLS handshake with %s failed (%s), while negotiating TLS" % (where, reason),
        hint="the server and this tool share no TLS version or cipher, or the server wants a client "
        "certificate; check the scheme and port in %s" % names.url,
    )
