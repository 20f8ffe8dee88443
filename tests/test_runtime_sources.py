"""Sources on real inputs: video files (every frame / real time / loop), folders, MJPEG and RTSP
servers on 127.0.0.1 killed and restarted mid-run, unreachable sources."""

import os
import time

import numpy as np
import pytest

from edgeship.errors import SourceError
from edgeship.runtime.sources import (GST_TEMPLATES, LatestFrameSource, gst_pipeline, gstreamer_available,
                                      make_reader, open_source, source_kind)
from tests.helpers.data import moving_digit_frames, write_digits_folder, write_video
from tests.helpers.mjpeg import MjpegServer
from tests.helpers.rtsp import RtspServer, rtsp_unavailable


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames, _ = moving_digit_frames(90)
    return write_video(tmp_path_factory.mktemp("src") / "belt.mp4", frames, fps=30)


def drain(src, *, delay=0.0, limit=10.0):
    items = []
    t = time.monotonic()
    while not src.exhausted and time.monotonic() - t < limit:
        it = src.get(0.5)
        if it is not None:
            items.append(it)
            time.sleep(delay)
    return items


def test_source_kind_registry():
    assert source_kind(0) == "camera" and source_kind("/dev/video2") == "camera"
    assert source_kind("rtsp://u:p@cam/x") == "stream" and source_kind("http://cam/mjpg") == "mjpeg"
    assert source_kind("gst:pi-libcamera") == "gstreamer" and source_kind("v4l2src ! appsink") == "gstreamer"
    assert source_kind("shots/img.png") == "folder" and source_kind("clip.mp4") == "video"
    assert make_reader("rtsp://user:secret@cam/x").name == "rtsp://user:***@cam/x"  # no passwords in logs
    with pytest.raises(SourceError):
        source_kind("  ")


def test_gstreamer_templates_and_missing_support():
    assert "nvarguscamerasrc sensor-id=1" in gst_pipeline("jetson-csi", sensor=1)
    assert gst_pipeline("pi-libcamera").startswith("libcamerasrc") and set(GST_TEMPLATES) == {"jetson-csi", "pi-libcamera"}
    assert "width=640,height=480" in gst_pipeline("pi-libcamera", width=640, height=480)
    if not gstreamer_available():  # the PyPI OpenCV: a clear one-line error, not a hang
        with pytest.raises(SourceError, match="built without GStreamer"):
            open_source("gst:pi-libcamera", open_timeout=1).start()


def test_video_every_frame_keeps_all_with_timestamps(video):
    with open_source(str(video)) as src:
        assert src.mode == "all"
        items = drain(src, delay=0.002)
        st = src.stats()
    assert len(items) == 90 and st["frames_dropped"] == 0 and st["nominal_fps"] == pytest.approx(30, abs=0.5)
    idx = [it.frame.index for it in items]
    assert idx == list(range(90))
    t = [it.frame.t_mono for it in items]
    assert all(b >= a for a, b in zip(t, t[1:])) and items[0].frame.t_capture > 1e9
    assert items[0].frame.image.shape == (240, 320, 3) and items[0].frame.image.dtype == np.uint8


def test_every_frame_mode_reads_ahead_a_bounded_number_of_frames(video):
    """Decoding overlaps the consumer's work, ``read_ahead`` frames ahead and no further: with a slow
    consumer the queue holds the next frames in order and the capture thread decodes no frame it has no room
    for (each would be one more frame-sized buffer per camera), nothing is dropped."""
    with open_source(str(video), read_ahead=3) as src:
        for k in range(1, 6):
            it = src.get(2.0)
            assert it is not None and it.frame.index == k - 1
            time.sleep(0.15)  # a slow consumer: the capture thread must not run further ahead
            assert src.captured <= k + 3  # k taken, up to 3 queued, none decoded and held
            assert [f.frame.index for f in src._frames][:1] == [k]
        assert src.captured >= 5 + 2 and src.stats()["frames_dropped"] == 0
    with pytest.raises(SourceError, match="read_ahead must be at least 1"):
        open_source(str(video), read_ahead=0)


def test_decode_threads_reach_ffmpeg(video):
    """``decode_threads`` is FFmpeg's thread count for the file (a site gives each camera its share of the CPUs)."""
    import cv2

    for n in (1, 3):
        reader = open_source(str(video), decode_threads=n).reader
        reader.open()
        try:
            assert reader.decode_threads == n and reader.cap.get(cv2.CAP_PROP_N_THREADS) == n
            assert reader.read() is not None
        finally:
            reader.close()


def test_file_frames_carry_the_files_clock(video):
    with open_source(str(video)) as src:
        items = drain(src)
    media = np.array([it.frame.t_media for it in items])
    np.testing.assert_allclose(media, np.arange(90) / 30.0, atol=1e-3)  # frames / fps, whatever the read speed
    scene = np.array([it.frame.scene_time for it in items])
    np.testing.assert_allclose(scene - scene[0], media, atol=1e-6)
    assert items[0].frame.t_scene == pytest.approx(items[0].frame.t_capture)


def test_video_realtime_drops_old_frames_and_counts_them(video):
    with open_source(str(video), realtime=True) as src:
        assert src.mode == "latest"
        t0 = time.monotonic()
        items = drain(src, delay=0.1)  # a consumer at ~10 fps on a 30 fps "camera"
        elapsed = time.monotonic() - t0
        st = src.stats()
    assert 2.6 < elapsed < 6.0  # paced at the file's 30 fps (90 frames ~ 3 s)
    assert st["frames_captured"] == 90 and st["frames_dropped"] > 30
    assert len(items) + st["frames_dropped"] == 90
    ages = [it.frame.index for it in items]
    assert ages == sorted(ages) and max(np.diff(ages)) > 1  # gaps: the old frames were dropped


def test_video_loop_and_prepare_in_capture_thread(video):
    with open_source(str(video), loop=True, prepare=lambda img: img[::2, ::2].copy()) as src:
        items = [src.get(2.0) for _ in range(150)]
    assert all(it is not None for it in items)
    assert items[-1].frame.index == 149 and items[0].sample.shape == (120, 160, 3) and items[0].prepare_ms >= 0


def test_image_folder(tmp_path):
    root = write_digits_folder(tmp_path / "digits", per_class=2)
    (root / "notes.txt").write_text("not an image")
    (root / "0" / "broken.png").write_bytes(b"not a png")
    with open_source(str(root)) as src:
        items = drain(src)
    assert len(items) == 20  # 10 classes x 2, unreadable files skipped
    single = sorted((root / "3").glob("*.png"))[0]
    with open_source(str(single)) as src:  # one image file is a one-frame source
        assert len(drain(src)) == 1


def test_missing_and_unreachable_sources_are_one_line_errors(tmp_path):
    cases = [(str(tmp_path / "nope.mp4"), "does not exist"), (str(tmp_path), "has no images"),
             ("http://127.0.0.1:9/stream.mjpg", "cannot connect"), ("/dev/video99", "does not exist")]
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\0" * 1000)
    cases.append((str(garbage), "cannot open"))
    for text, msg in cases:
        t = time.monotonic()
        with pytest.raises(SourceError) as e:
            open_source(text, open_timeout=1.5).start()
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
        assert time.monotonic() - t < 8


def test_mjpeg_server_killed_mid_run_reconnects(video):
    with MjpegServer(video, fps=30) as cam:
        src = LatestFrameSource(make_reader(cam.url, read_timeout=2.0), backoff=(0.1, 1.0))
        with src:
            before = [src.get(3.0) for _ in range(10)]
            assert all(b is not None for b in before)
            cam.kill()
            time.sleep(0.8)
            assert not src.connected
            cam.start()
            after = [src.get(5.0) for _ in range(10)]
            st = src.stats()
    assert all(a is not None for a in after)
    assert st["reconnects"] == 1 and st["reconnect_attempts"] >= 1
    assert after[-1].frame.index > before[-1].frame.index


def test_mjpeg_snapshot_url_and_wrong_content_type():
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import cv2

    jpg = cv2.imencode(".jpg", np.full((48, 64, 3), 200, np.uint8))[1].tobytes()

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            return None

        def do_GET(self):
            body, ctype = (jpg, "image/jpeg") if self.path == "/snap.jpg" else (b"<html>", "text/html")
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        port = srv.server_address[1]
        with open_source(f"http://127.0.0.1:{port}/snap.jpg") as src:
            frames = [src.get(3.0) for _ in range(3)]
        assert all(f is not None and f.frame.image.shape == (48, 64, 3) for f in frames)
        with pytest.raises(SourceError, match="serves text/html; expected multipart"):
            open_source(f"http://127.0.0.1:{port}/", open_timeout=1).start()
    finally:
        srv.shutdown()


@pytest.fixture(scope="module")
def rtsp_ok():
    reason = rtsp_unavailable()
    if reason:
        pytest.skip(reason)


def test_rtsp_stream_reads_drops_and_reconnects(rtsp_ok):
    with RtspServer(fps=30) as cam:
        src = LatestFrameSource(make_reader(cam.url, read_timeout=2.0), open_timeout=15, backoff=(0.2, 1.0))
        with src:
            first = [src.get(5.0) for _ in range(15)]
            assert all(f is not None for f in first)
            assert first[0].frame.image.shape == (240, 320, 3)
            cam.kill()
            time.sleep(0.5)
            cam.start()
            deadline = time.monotonic() + 20
            while src.reconnects == 0 and time.monotonic() < deadline:
                src.get(0.5)
            after = [src.get(5.0) for _ in range(10)]
            st = src.stats()
    assert st["reconnects"] >= 1 and all(a is not None for a in after)
    assert st["source_fps"] > 5
    # the RTSP transport went to FFmpeg for the open calls only: the process environment is as it was
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ
