"""HTTP cameras: MJPEG streams (``multipart/x-mixed-replace``) and JPEG snapshot URLs.

Read with the standard library (no FFmpeg), so a dead camera is noticed within the socket timeout
and reopened by the capture thread.
"""

from __future__ import annotations

import http.client
import logging
import socket
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from ...errors import SourceError
from .readers import _redact

log = logging.getLogger(__name__)

MAX_PART_BYTES = 32 << 20


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    import cv2

    if not data:
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


class MjpegReader:
    """Frames from an MJPEG-over-HTTP URL (or repeated fetches of a JPEG snapshot URL)."""

    live = True

    def __init__(self, url: str, name: str | None = None, *, read_timeout: float = 5.0) -> None:
        self.url = url
        self.name = name or _redact(url)
        self.read_timeout = read_timeout
        self.fps: float | None = None
        self._resp: Any = None
        self._boundary: bytes | None = None
        self._pending_boundary = False
        self._snapshot: bytes | None = None
        self.decode_errors = 0

    def open(self, timeout: float = 10.0) -> None:
        self.close()
        try:
            resp = urllib.request.urlopen(self.url, timeout=min(timeout, self.read_timeout))
        except urllib.error.HTTPError as e:
            raise SourceError(f"{self.name}: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise SourceError(f"{self.name}: cannot connect ({reason})") from None
        ctype = resp.headers.get_content_type()
        if ctype.startswith("multipart/"):
            boundary = resp.headers.get_param("boundary")
            if not boundary:
                resp.close()
                raise SourceError(f"{self.name}: multipart stream without a boundary parameter")
            b = str(boundary).strip('"').encode("latin-1")
            self._boundary = b if b.startswith(b"--") else b"--" + b
            self._snapshot = None
        elif ctype in ("image/jpeg", "image/jpg"):
            self._boundary = None
            self._snapshot = resp.read()
            resp.close()
            resp = None
        else:
            resp.close()
            raise SourceError(f"{self.name} serves {ctype}; expected multipart/x-mixed-replace (MJPEG) or image/jpeg")
        self._resp = resp
        self._pending_boundary = False

    def read(self) -> np.ndarray | None:
        if self._snapshot is not None:
            return self._read_snapshot()
        if self._resp is None:
            return None
        try:
            for _ in range(8):  # skip a few undecodable parts before calling the stream broken
                data = self._next_part()
                if data is None:
                    return None
                img = _decode_jpeg(data)
                if img is not None:
                    return img
                self.decode_errors += 1
            return None
        except (OSError, socket.timeout, http.client.HTTPException, ValueError) as e:
            log.debug("%s: read failed: %s", self.name, e)
            return None

    def _read_snapshot(self) -> np.ndarray | None:
        data, self._snapshot = self._snapshot, b""
        if not data:
            try:
                with urllib.request.urlopen(self.url, timeout=self.read_timeout) as r:
                    data = r.read()
            except (urllib.error.URLError, OSError, http.client.HTTPException):
                return None
        return _decode_jpeg(data)

    def _next_part(self) -> bytes | None:
        fp = self._resp
        if not self._pending_boundary:
            while True:  # find the boundary line
                line = fp.readline(65536)
                if not line:
                    return None
                if line.strip().startswith(self._boundary):
                    break
        self._pending_boundary = False
        length = None
        while True:  # part headers
            line = fp.readline(65536)
            if not line:
                return None
            if not line.strip():
                break
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == "content-length":
                length = int(value.strip())
        if length is not None:
            if length > MAX_PART_BYTES:
                raise ValueError(f"part of {length} bytes is larger than {MAX_PART_BYTES}")
            data = fp.read(length)
            return data if len(data) == length else None
        chunks, size = [], 0
        while True:  # no Content-Length: read up to the next boundary
            line = fp.readline(65536)
            if not line:
                return None
            if line.strip().startswith(self._boundary):
                self._pending_boundary = True
                break
            chunks.append(line)
            size += len(line)
            if size > MAX_PART_BYTES:
                raise ValueError(f"part larger than {MAX_PART_BYTES} bytes")
        return b"".join(chunks).rstrip(b"\r\n")

    def rewind(self) -> bool:
        return False

    def close(self) -> None:
        if self._resp is not None:
            try:
                self._resp.close()
            except OSError as e:  # closing a reset connection may fail; the socket is gone either way
                log.debug("%s: close: %s", self.name, e)
            self._resp = None
