"""One way to POST from the device: webhooks and reject outputs never follow a redirect.

urllib follows a 301/302/303 by re-sending the request as a GET, whose 200 would count as a
delivered event. A redirect is reported as a failed delivery instead, naming where it pointed.

An ``https://`` receiver's certificate and name are checked against the system's authorities, or
against ``ca_file`` (:class:`HttpsTrustCfg`, shared by the webhook event sink and the HTTP reject
output) for a receiver with a private CA.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any, Optional

from pydantic import Field, model_validator

from ..errors import ConfigError
from .schema import DeviceOnlyFile, Strict, checked


class HttpsTrustCfg(Strict):
    """Whom an https:// receiver must be (the keys every POSTing plugin shares)."""

    ca_file: Optional[DeviceOnlyFile] = Field(None, description="for an https:// url: PEM file of the authorities that signed the receiver's certificate (default: the system's); in a bundle a device:PATH")

    @model_validator(mode="after")
    def _https_only(self) -> "HttpsTrustCfg":
        checked(check_ca_file)(getattr(self, "url", None), self.ca_file)
        return self


def check_ca_file(url: str | None, ca_file: str | None) -> None:
    """A CA file is for an https:// receiver only."""
    if ca_file is not None and not str(url or "").startswith("https://"):
        raise ConfigError(f"ca_file is for an https:// url, got {url!r}")


def opener_for(url: str, ca_file: str | None) -> Any:
    """The opener a plugin POSTs to ``url`` with: one that checks an https:// receiver against ``ca_file`` (else the
    system's authorities); never following redirects. Bad files are one-line errors, here, before the run."""
    check_ca_file(url, ca_file)
    if ca_file is None:
        return _OPENER
    from .tls import client_context

    return urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=client_context(ca_file)))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl} (a POST is never re-sent to a "
                                     "redirect: fix the URL)", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float, opener: Any = None) -> int:
    """POST ``body``; returns the 2xx status, raises ``HTTPError`` for any other answer (3xx included) or ``OSError``.
    ``opener``: an :func:`opener_for` (default: the system's authorities)."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with (opener or _OPENER).open(req, timeout=timeout) as resp:
        resp.read()
        if not 200 <= resp.status < 300:
            raise urllib.error.HTTPError(url, resp.status, f"not a 2xx answer: {resp.status}", resp.headers, None)
        return resp.status
