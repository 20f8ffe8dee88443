"""One way to POST from the device: webhooks and reject outputs never follow a redirect.

urllib follows a 301/302/303 by re-sending the request as a GET, whose 200 would count as a
delivered event. A redirect is reported as a failed delivery instead, naming where it pointed.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirected to {newurl} (a POST is never re-sent to a "
                                     "redirect: fix the URL)", headers, fp)


_OPENER = urllib.request.build_opener(_NoRedirect)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST ``body``; returns the 2xx status, raises ``HTTPError`` for any other answer (3xx included) or ``OSError``."""
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    with _OPENER.open(req, timeout=timeout) as resp:
        resp.read()
        if not 200 <= resp.status < 300:
            raise urllib.error.HTTPError(url, resp.status, f"not a 2xx answer: {resp.status}", resp.headers, None)
        return resp.status
