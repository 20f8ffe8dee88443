"""A real RTSP camera on 127.0.0.1: GStreamer's RTSP server run by Debian's /usr/bin/python3 (python3-gi).

    with RtspServer(fps=30) as cam:       # videotestsrc -> x264enc tune=zerolatency -> rtph264pay
        url = cam.url                     # rtsp://127.0.0.1:PORT/cam
        cam.kill(); cam.start()           # drop the stream mid-run and bring it back on the same port

:func:`rtsp_unavailable` returns why it cannot run here (None when it can), for ``pytest.skip``.
Run directly: /usr/bin/python3 tests/helpers/rtsp.py PORT FPS WIDTH HEIGHT
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
CHECK = "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('x264enc'), 'x264enc missing (gstreamer1.0-plugins-ugly)'"


def rtsp_unavailable() -> str | None:
    """None if an RTSP server can run here, else the reason (scripts/system-deps.sh has run before the tests)."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} is missing (Debian python3 with python3-gi runs the RTSP server)"
    r = subprocess.run([SYSTEM_PYTHON, "-c", CHECK], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["unknown error"])[-1]
        return f"GStreamer RTSP server unavailable (scripts/system-deps.sh installs it): {last}"
    return None


class RtspServer:
    def __init__(self, port: int | None = None, fps: int = 30, width: int = 320, height: int = 240) -> None:
        from .mjpeg import free_port

        self.port = port or free_port()
        self.fps, self.width, self.height = fps, width, height
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> "RtspServer":
        from .mjpeg import wait_port

        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(Path(__file__).resolve()), str(self.port), str(self.fps), str(self.width), str(self.height)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_port(self.port, timeout=20.0)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> "RtspServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def _serve(port: int, fps: int, width: int, height: int) -> None:  # runs under Debian's python3
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    GLib.MainLoop().run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
