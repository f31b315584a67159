"""The one place TLS is configured, and the one place TLS failures are explained.

Usage: ``ctx = build_ssl_context(Path("certs_credentials/ca-chain.pem"))``

Verification is always on: ``PROTOCOL_TLS_CLIENT`` means CERT_REQUIRED and hostname checking,
the only trust anchors are the bundle's CA file, and TLS 1.2 is the floor. There is deliberately
no way to turn any of that off; to trust a server, put its CA in the bundle.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Optional

from .errors import ConfigError, IotPostError, TLSVerifyError, TransientError


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
            hint="it must be PEM text starting with -----BEGIN CERTIFICATE-----; "
            "download the bundle for this platform again",
        ) from None
    if certfile is not None:
        try:
            ctx.load_cert_chain(str(certfile), str(keyfile) if keyfile else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("%s cannot be used as a client certificate (%s)" % (certfile, exc)) from None
    return ctx


def explain_tls_failure(exc: ssl.SSLError, host: str, cafile: Optional[Path]) -> IotPostError:
    """Turn a failed handshake into one line a field engineer can act on.

    Certificate and protocol failures are configuration (78, the message says 'certificate'); a
    handshake the other side hung up on (a proxy with no backend, a restarting server) may work
    next time (75).
    """
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)):
        return TransientError("%s closed the connection during the TLS handshake (%s)"
                              % (host, exc.__class__.__name__),
                              hint="the server or a proxy in front of it is restarting or overloaded; "
                              "it is retried")
    ca = str(cafile) if cafile else "the CA file"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        detail = getattr(exc, "verify_message", None) or str(exc)
        if code == 62 or "hostname mismatch" in detail.lower():
            return TLSVerifyError(
                "the server's certificate is not valid for host %r (%s), while verifying the server"
                % (host, detail),
                hint="check --base-url / endpoints.json: the host name must be one the certificate names",
            )
        if code == 10 or "expired" in detail.lower():
            return TLSVerifyError(
                "the server's certificate has expired, while verifying the server %s" % host,
                hint="the server must renew its certificate; check this machine's clock too",
            )
        if code == 9 or "not yet valid" in detail.lower():
            return TLSVerifyError(
                "the server's certificate is not yet valid, while verifying the server %s" % host,
                hint="check this machine's clock (a Raspberry Pi without RTC may boot in 1970)",
            )
        return TLSVerifyError(
            "the server's certificate is not signed by %s (%s), while verifying the server %s"
            % (ca, detail, host),
            hint="is %s the CA of this platform (its bundle's ca-chain.pem, or --ca-file)? to trust a "
            "server, put its CA there" % ca,
        )
    reason = getattr(exc, "reason", None) or exc.__class__.__name__
    return ConfigError(
        "TLS handshake with %s failed (%s), while verifying the server certificate" % (host, reason),
        hint="the server must speak TLS 1.2 or newer on this port; check the URL's scheme and port",
    )
