"""A real MJPEG-over-HTTP camera on 127.0.0.1, run in a child process so a test can kill it.

    with MjpegServer(video_path, fps=30) as cam:
        url = cam.url            # http://127.0.0.1:PORT/stream.mjpg
        cam.kill(); cam.start()  # drop the stream mid-run and bring it back on the same port

Run directly: python -m tests.helpers.mjpeg VIDEO PORT FPS [LOOP]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

BOUNDARY = b"edgeshipframe"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class MjpegServer:
    def __init__(self, video: Path, fps: float = 30.0, port: int | None = None, loop: bool = True):
        self.video, self.fps, self.loop = Path(video), fps, loop
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> "MjpegServer":
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.mjpeg", str(self.video), str(self.port), str(self.fps), "1" if self.loop else "0"],
            cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "MjpegServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def _serve(video: str, port: int, fps: float, loop: bool) -> None:
    import cv2
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cap = cv2.VideoCapture(video)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    cap.release()
    if not frames:
        raise SystemExit(f"no frames in {video}")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}")
            self.end_headers()
            i, t0 = 0, time.monotonic()
            try:
                while True:
                    if i >= len(frames):
                        if not loop:
                            return
                        i = 0
                    jpg = frames[i]
                    self.wfile.write(b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                    i += 1
                    delay = t0 + i / fps - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                return

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1" if len(sys.argv) > 4 else True)
