"""A webhook receiver on 127.0.0.1 that a test can stop and restart on the same port.

Every POST is recorded (path, headers, JSON body) in ``received`` and survives restarts, so a test
can check that queued events arrive exactly once. ``fail_next`` makes the next N requests answer 503
(try again later), ``reject_next`` the next N answer 400 (never send this again).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .mjpeg import free_port


class WebhookReceiver:
    def __init__(self, port: int | None = None, *, tls: tuple | None = None) -> None:
        """``tls``: (certificate, key) PEM files to answer over HTTPS."""
        self.port = port or free_port()
        self.tls = tls
        self.received: list[dict] = []
        self.fail_next = 0
        self.reject_next = 0
        self.rejected: list[dict] = []
        self._cond = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/events"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> "WebhookReceiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        status = 503
                    elif receiver.reject_next > 0:
                        receiver.reject_next -= 1
                        receiver.rejected.append(json.loads(body or b"null"))
                        status = 400
                    else:
                        status = 200
                        receiver.received.append({"path": self.path, "headers": dict(self.headers),
                                                  "json": json.loads(body or b"null"), "t": time.time()})
                        receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        if self.tls:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*map(str, self.tls))
            self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def wait(self, count: int, timeout: float = 15.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < count and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return list(self.received)

    def __enter__(self) -> "WebhookReceiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
