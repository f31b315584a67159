"""The one place TLS is configured, and the one place TLS failures are explained.

Usage: ``ctx = build_ssl_context(Path("certs_credentials/ca-chain.pem"))``

Verification is always on: ``PROTOCOL_TLS_CLIENT`` means CERT_REQUIRED and hostname checking,
the only trust anchors are the bundle's CA file, and TLS 1.2 is the floor. There is deliberately
no way to turn any of that off; to trust a server, put its CA in the bundle.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import List, Optional

from .errors import ConfigError, IotPostError, TLSVerifyError, TransientError
from .target import GENERIC_NAMES, SettingNames


def build_ssl_context(
    cafile: Path,
    certfile: Optional[Path] = None,
    keyfile: Optional[Path] = None,
) -> ssl.SSLContext:
    """A client context trusting only ``cafile``; a client certificate is optional (mTLS)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
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
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("%s cannot be used as a client certificate (%s)" % (certfile, exc)) from None
    return ctx


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


def explain_tls_failure(exc: ssl.SSLError, host: str, cafile: Optional[Path],
                        names: SettingNames = GENERIC_NAMES, cert_names: Optional[List[str]] = None,
                        port: Optional[int] = None) -> IotPostError:
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
        return TLSVerifyError(
            "the server's certificate is not signed by %s (%s), while verifying the server %s"
            % (ca, detail, where),
            hint="is %s the CA of this platform? to trust a server, put its CA there (%s)" % (ca, names.ca),
        )
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
