"""TLS contexts from PEM files, for the camera server (HTTPS) and the MQTT client (mqtts://).

One home for what a TLS file must be and the one-line errors when it is not: a missing file, a file
that is not PEM, a key that does not match its certificate, and an encrypted key (a service has no
terminal to type a passphrase on). TLS 1.2 is the oldest version either side speaks.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

MIN_VERSION = ssl.TLSVersion.TLSv1_2
RELOAD_CHECK_S = 5.0  # how often a serving certificate's files are looked at for a renewal


def _exists(what: str, path: str | Path) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"TLS {what} {path} does not exist")


def _load_chain(ctx: ssl.SSLContext, cert: str | Path, key: str | Path) -> None:
    _exists("certificate", cert)
    _exists("private key", key)

    def no_passphrase() -> bytes:
        raise ConfigError(f"TLS private key {key} is encrypted; a service cannot type its passphrase: decrypt it "
                          "(openssl pkey -in KEY -out PLAIN.pem) and let only the service user read it")

    try:
        ctx.load_cert_chain(str(cert), str(key), password=no_passphrase)
    except ssl.SSLError as e:
        raise ConfigError(f"TLS certificate {cert} with key {key}: expected a PEM certificate and its matching "
                          f"private key ({e.reason or e})") from None
    except OSError as e:
        raise ConfigError(f"TLS certificate {cert} with key {key}: {e.strerror or e}") from None


def check_pair(cert: Any, key: Any, names: tuple[str, str] = ("cert_file", "key_file")) -> None:
    """A certificate and its key come together: both or neither (the rule every TLS config uses)."""
    if (cert is None) != (key is None):
        raise ConfigError(f"{names[0]} and {names[1]} go together: give both or neither")


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server-side context from a PEM certificate (chain) and its unencrypted private key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    _load_chain(ctx, cert, key)
    return ctx


class ServerCertificate:
    """The server's TLS context, built again when its certificate or key file changes: a renewed certificate
    (certbot, an internal CA's rotation) is served to the next connections without a restart. A renewal caught
    half-written (a new certificate, the old key) keeps the previous context, with a warning, until both match."""

    def __init__(self, cert: str | Path, key: str | Path, check_every: float = RELOAD_CHECK_S) -> None:
        self.cert, self.key, self.check_every = cert, key, float(check_every)
        self._stamp = self._files()  # before loading: a renewal during the load is seen at the next look
        self.context = server_context(cert, key)
        self._next = time.monotonic() + self.check_every

    def _files(self) -> tuple | None:
        try:
            # ctime too: a renewal hook's chown/chmod after the copy changes only that
            return tuple((s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for s in (os.stat(self.cert), os.stat(self.key)))
        except OSError:
            return None

    def current(self) -> ssl.SSLContext:
        """The context for a new connection (called from the accept loop only)."""
        now = time.monotonic()
        if now < self._next:
            return self.context
        self._next = now + self.check_every
        stamp = self._files()
        if stamp is not None and stamp != self._stamp:
            self._stamp = stamp
            try:
                self.context = server_context(self.cert, self.key)
                log.info("TLS certificate %s changed: new connections get the new one", self.cert)
            except ConfigError as e:
                log.warning("TLS certificate %s changed but cannot be used yet (the previous one is kept): %s",
                            self.cert, e)
        return self.context


def client_context(ca_file: str | Path | None = None, cert: str | Path | None = None,
                   key: str | Path | None = None) -> ssl.SSLContext:
    """A client context that checks the server's certificate and name: against ``ca_file`` only (a PEM bundle of the
    authorities to trust) or else the system's authorities; with ``cert``/``key``, the client's own certificate."""
    check_pair(cert, key)
    if ca_file is not None:
        _exists("CA file", ca_file)
    try:  # with a CA file, only its authorities: a public certificate for the same name is not accepted
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file is not None else None)
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError(f"TLS CA file {ca_file}: expected PEM certificates ({getattr(e, 'reason', None) or e})") from None
    except OSError as e:
        raise ConfigError(f"TLS CA file {ca_file}: {e.strerror or e}") from None
    ctx.minimum_version = MIN_VERSION
    if cert is not None:
        _load_chain(ctx, cert, key)
    return ctx
