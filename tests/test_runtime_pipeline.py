"""The pipeline end to end on real artifacts and videos, with the jsonl, video and HTTP sinks and gates."""

import json
import platform
import sys
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from edgeship.runtime import build_pipeline
from edgeship.runtime.sinks import HttpSink, JsonlSink, VideoSink, make_sink
from edgeship.errors import ConfigError, InputError
from tests.helpers.data import digits_bgr, moving_digit_frames, write_video
from tests.helpers.runtime_artifacts import YOLO_LABELS


@pytest.fixture(scope="module")
def digits_video(tmp_path_factory):
    """60 real digits, one per frame (96x96, lossless MJPG-in-AVI), and their labels."""
    imgs, y = digits_bgr(32)
    idx = np.random.default_rng(3).permutation(len(imgs))[:60]
    frames = [cv2.resize(imgs[i], (96, 96), interpolation=cv2.INTER_NEAREST) for i in idx]
    path = write_video(tmp_path_factory.mktemp("vid") / "digits.avi", frames, fps=30, codec="MJPG")
    return path, y[idx]


@pytest.fixture(scope="module")
def belt_video(tmp_path_factory):
    frames, _ = moving_digit_frames(60)
    return write_video(tmp_path_factory.mktemp("vid") / "belt.mp4", frames, fps=30)


def test_classify_pipeline_every_frame_with_jsonl(art, digits_video, tmp_path):
    video, labels = digits_video
    out = tmp_path / "res.jsonl"
    pipe = build_pipeline(art["tflite_int8"], str(video), sinks=[f"jsonl:{out}"], top_k=3, handle_signals=False)
    s = pipe.run()
    assert s.stopped_by == "end_of_source" and s.task == "classify" and s.executed_precision == "int8"
    assert s.frames_processed == 60 and s.frames_dropped == 0 and s.skipped == 0
    for key in ("read", "preprocess", "infer", "postprocess", "sinks"):
        assert s.latency_ms[key]["count"] == 60 and s.latency_ms[key]["p50"] >= 0
    assert s.latency_ms["read"]["p50"] > 0  # the file's decoding, which glass-to-glass counts too
    g = s.glass_to_glass_ms
    assert g["p50"] <= g["p90"] <= g["p99"] <= g["max"] and g["p50"] >= s.latency_ms["infer"]["p50"]
    assert s.frame_age_ms["count"] == 60 and s.processed_fps > 0 and s.inference_fps > 0
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(60))
    pred = np.array([int(r["classification"][0]["label"]) for r in rows])
    assert len(rows[0]["classification"]) == 3
    assert (pred == labels).mean() > 0.8  # the manifest's InputSpec + labels reach the model intact


def test_detect_pipeline_maps_boxes_to_the_frame_and_draws_them(art, belt_video, tmp_path):
    out_video, out_jsonl = tmp_path / "annotated.mp4", tmp_path / "det.jsonl"
    for key in ("yolo_tflite", "yolo_openvino"):
        s = build_pipeline(art[key], str(belt_video), sinks=[f"jsonl:{out_jsonl}", f"video:{out_video}"],
                           max_frames=12, handle_signals=False).run()
        assert s.task == "detect" and s.frames_processed == 12 and s.stopped_by == "max_frames"
        rows = [json.loads(ln) for ln in out_jsonl.read_text().splitlines()]
        assert len(rows) == 12
        det = rows[0]["detections"]
        # the constant detector's box: centre (0.5, 0.5), size (0.5, 0.25) of a 320x240 frame (stretch)
        assert len(det) == 1 and det[0]["label"] == YOLO_LABELS[1]
        assert det[0]["box"] == pytest.approx([80, 90, 240, 150], abs=1.0) and det[0]["score"] == pytest.approx(0.9, abs=0.01)
    cap = cv2.VideoCapture(str(out_video))
    n, first = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        first = f if first is None else first
        n += 1
    assert n == 12 and first.shape == (240, 320, 3)
    src = moving_digit_frames(1)[0][0]
    # the box outline is drawn in the class colour at x=80 (untouched background elsewhere)
    assert np.abs(first[120, 78:83].astype(int) - src[120, 78:83].astype(int)).max() > 60
    assert not list(tmp_path.glob(".annotated*"))  # atomic: no temporary left


class EveryOther:
    """A gate that lets every second frame through."""

    def __init__(self):
        self.seen = 0

    def should_infer(self, frame):
        self.seen += 1
        return self.seen % 2 == 1


class Recorder:
    def __init__(self):
        self.events = []

    def open(self, info):
        self.events.append(("open", info["task"], info["labels"][:2], info["source"]))

    def write(self, frame, result):
        self.events.append(("write", frame.index))

    def skip(self, frame):
        self.events.append(("skip", frame.index))

    def close(self):
        self.events.append(("close",))


class Broken:
    def open(self, info):
        return None

    def write(self, frame, result):
        raise RuntimeError("disk full")

    def close(self):
        return None


def test_gates_skip_and_count_and_a_failing_sink_does_not_stop_the_run(art, digits_video):
    video, _ = digits_video
    gate, rec = EveryOther(), Recorder()
    s = build_pipeline(art["tflite_f32"], str(video), sinks=[Broken(), rec], gates=[gate], max_frames=20,
                       handle_signals=False).run()
    assert gate.seen == 20 and s.frames_processed == 10 and s.frames_skipped_gate == 10 and s.skipped == 10
    assert s.sink_errors == 10
    assert rec.events[0] == ("open", "classify", ["0", "1"], str(video))
    assert rec.events[1:3] == [("write", 0), ("skip", 1)] and rec.events[-1] == ("close",)


def test_duration_and_realtime_pacing(art, belt_video):
    t = time.monotonic()
    s = build_pipeline(art["tflite_f32"], str(belt_video), realtime=True, loop=True, duration=1.5,
                       task="raw", handle_signals=False).run()
    assert 1.4 < time.monotonic() - t < 5 and s.stopped_by == "duration" and s.task == "raw"
    assert 25 <= s.frames_captured <= 60  # ~30 fps like the camera it simulates
    assert s.source_fps == pytest.approx(30, rel=0.35)


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def test_http_sink_health_metrics_mjpeg_and_app_routes(art, belt_video):
    sink = HttpSink("127.0.0.1", 0)
    sink.add_route("POST", "/api/echo", lambda body, q: (201, "application/json", json.dumps({"got": body.decode(), "q": q}).encode()))
    pipe = build_pipeline(art["yolo_tflite"], str(belt_video), sinks=[sink], realtime=True, loop=True, handle_signals=False)
    th = threading.Thread(target=pipe.run)
    th.start()
    try:
        deadline = time.monotonic() + 20
        while pipe.metrics.processed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        base = sink.url
        assert base.startswith("http://127.0.0.1:")
        status, ctype, body = _get(base + "/health")
        h = json.loads(body)
        assert status == 200 and ctype == "application/json" and h["status"] == "ok" and h["task"] == "detect"
        assert h["frames_processed"] >= 5 and h["last_result"]["detections"][0]["label"] == "nut"
        status, ctype, body = _get(base + "/metrics")
        text = body.decode()
        assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
        assert "# TYPE edgeship_frames_processed_total counter" in text
        assert 'edgeship_frames_skipped_total{model="yolo_const",task="detect",reason="dropped"}' in text
        assert 'stage="glass_to_glass",quantile="0.99"' in text
        processed = float(next(ln.split()[-1] for ln in text.splitlines() if ln.startswith("edgeship_frames_processed_total")))
        assert processed >= 5
        # the MJPEG live view: read two JPEG parts from the multipart stream
        with urllib.request.urlopen(base + "/stream.mjpg", timeout=10) as r:
            assert r.headers.get_content_type() == "multipart/x-mixed-replace"
            buf = b""
            while buf.count(b"\xff\xd9") < 2:
                buf += r.read1(65536)
        start = buf.index(b"\xff\xd8")
        img = cv2.imdecode(np.frombuffer(buf[start : buf.index(b"\xff\xd9", start) + 2], np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (240, 320, 3)
        req = urllib.request.Request(base + "/api/echo?x=1", data=b"hi", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 201 and json.loads(r.read()) == {"got": "hi", "q": {"x": "1"}}
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(base + "/nope")
        assert e.value.code == 404
        assert "stream.mjpg" in _get(base + "/")[2].decode()
    finally:
        pipe.stop()
        th.join(15)
    assert not th.is_alive() and pipe.summary.stopped_by == "stop"
    with pytest.raises(urllib.error.URLError):
        _get(base + "/health", timeout=2)


def test_make_sink_registry_errors(tmp_path):
    assert isinstance(make_sink("jsonl:-"), JsonlSink) and isinstance(make_sink(f"video:{tmp_path}/a.avi"), VideoSink)
    h = make_sink("http:0.0.0.0:8099", token="s3cret-token")
    assert (h.server.host, h.server.port, h.server.token) == ("0.0.0.0", 8099, "s3cret-token")
    assert make_sink("http:8098").server.host == "127.0.0.1"
    for bad, msg in (("ftp:x", "sink must look like"), ("video:", "needs a file name"), ("video:out.gif", "expected a file ending"),
                     ("http:abc", "http:PORT"), ("http:127.0.0.1:99999", "must be 0-65535")):
        with pytest.raises(InputError, match=msg):
            make_sink(bad)
    with pytest.raises(ConfigError, match="needs a token"):  # off loopback, however the server is started
        make_sink("http:0.0.0.0:8099")


def test_int8_pipeline_feeds_the_quantized_tensor_made_in_the_capture_thread(art, digits_video):
    from edgeship.runtime import open_backend
    from edgeship.preprocess import preprocess

    video, _ = digits_video
    seen = []

    class Keep:
        def open(self, info):
            pass

        def write(self, frame, result):
            seen.append((frame.image.copy(), result.classification.top[0]))

        def close(self):
            pass

    pipe = build_pipeline(art["tflite_int8"], str(video), sinks=[Keep()], max_frames=12, handle_signals=False)
    assert pipe.quant is not None and pipe.source.prepare is not None
    pipe.run()
    with open_backend(art["tflite_int8"]) as b:
        for img, (cid, _, score) in seen:
            ref = b.infer(preprocess(img, b.manifest.input_spec)[None])[0][0]
            assert cid == int(ref.argmax()) and score == pytest.approx(float(ref.max()), abs=1e-6)


def test_capture_and_inference_are_pinned_apart_the_caller_is_restored_and_freed_frames_kept(art, digits_video):
    import os

    from edgeship.runtime.affinity import allowed_cpus, plan

    assert plan({0}) is None and plan({0, 1, 2, 3}) == (frozenset({0, 1, 2}), frozenset({3}))
    cpus = allowed_cpus()
    if len(cpus) < 2:
        pytest.skip("needs 2 CPUs")
    video, _ = digits_video
    seen = {}

    class Probe:
        def open(self, info):
            pass

        def write(self, frame, result):
            cap = next(t for t in threading.enumerate() if t.name.startswith("capture:"))
            seen["infer"] = os.sched_getaffinity(threading.main_thread().native_id)  # the loop runs in the caller's thread
            seen["capture"] = os.sched_getaffinity(cap.native_id)
            seen["output"] = os.sched_getaffinity(0)  # sinks are written by the output thread

        def close(self):
            pass

    s = build_pipeline(art["tflite_int8"], str(video), sinks=[Probe()], max_frames=5, handle_signals=False, pin=None,
                       keep_freed_frames=True).run()  # the process-wide settings `edgeship run` opts into
    infer, capture = plan(cpus)
    assert seen == {"infer": set(infer), "capture": set(capture), "output": set(capture)}
    assert s.cpus == {"inference": sorted(infer), "capture": sorted(capture), "output": sorted(capture)}
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's thread gets its CPUs back
    from edgeship.runtime.allocator import user_tuned

    kept = None
    if platform.libc_ver()[0] == "glibc" and not user_tuned():  # freed frames are kept for reuse
        kept = {"mmap_threshold": 4 * 1024 * 1024 * (8 if sys.maxsize > 2**32 else 4), "trim_threshold": 64 * 1024 * 1024}
    assert s.allocator == kept
    s = build_pipeline(art["tflite_int8"], str(video), sinks=[Probe()], max_frames=5, handle_signals=False).run()  # Python's defaults: neither
    assert s.cpus is None and seen["capture"] == set(cpus)
    assert s.allocator == kept  # process-wide: what the first run set is still in effect


def test_output_thread_keeps_order_loses_nothing_behind_a_slow_sink_and_flushes_on_stop(art, digits_video):
    """Post-processing and sinks run in their own thread; a slow sink makes the model wait (a full
    hand-off queue), never drops a result, and results already inferred are written before close."""
    video, labels = digits_video
    main = threading.get_ident()
    log = []

    class Slow:
        def open(self, info):
            log.append("open")

        def write(self, frame, result):
            assert threading.get_ident() != main  # written by the output thread, not the inference loop
            time.sleep(0.02)
            log.append(("write", frame.index, result.classification.label))

        def close(self):
            log.append("close")

    pipe = build_pipeline(art["tflite_int8"], str(video), sinks=[Slow()], output_queue=2, handle_signals=False)
    waiting = []
    pipe.backend.run_prepared = (lambda run: lambda x: (waiting.append(pipe._out_q.qsize()), run(x))[1])(pipe.backend.run_prepared)
    s = pipe.run()
    writes = [e for e in log if isinstance(e, tuple)]
    assert log[0] == "open" and log[-1] == "close" and s.frames_processed == 60
    assert [w[1] for w in writes] == list(range(60))  # in frame order, none lost
    assert np.mean([int(w[2]) == y for w, y in zip(writes, labels)]) > 0.8
    assert max(waiting) <= 2  # the model waited for the sink instead of queueing without bound

    log.clear()
    pipe = build_pipeline(art["tflite_int8"], str(video), sinks=[Slow()], output_queue=3, handle_signals=False)
    threading.Timer(0.2, pipe.stop, args=("signal",)).start()
    s = pipe.run()
    writes = [e for e in log if isinstance(e, tuple)]
    assert s.stopped_by == "signal" and 0 < len(writes) < 60 and log[-1] == "close"
    assert len(writes) == s.frames_processed == s.latency_ms["infer"]["count"]  # every inferred frame written


def test_a_post_processing_error_in_the_output_thread_ends_the_run(art, digits_video):
    from edgeship.errors import SpecError
    from edgeship.runtime.pipeline import Pipeline

    video, _ = digits_video
    closed = []

    class Sink:
        def open(self, info):
            pass

        def write(self, frame, result):
            pass

        def close(self):
            closed.append(True)

    def post(outputs, hw):
        raise SpecError("detection needs 4 outputs, got 1")

    from edgeship.runtime import open_backend

    with open_backend(art["tflite_int8"]) as b:
        pipe = Pipeline(str(video), b, spec=b.manifest.input_spec, postprocess=post, sinks=[Sink()], handle_signals=False)
        with pytest.raises(SpecError, match="needs 4 outputs"):
            pipe.run()
        assert pipe.stopped_by == "error" and closed == [True]
        with pytest.raises(Exception, match="output_queue must be 1-1000"):
            Pipeline(str(video), b, spec=b.manifest.input_spec, postprocess=post, output_queue=0)


def test_option_groups_and_flat_keywords_give_the_same_run(art, digits_video, tmp_path):
    """build_pipeline(options=RunOptions(...)) and its flat keywords are one thing; a bad value is one line naming it."""
    from edgeship.errors import InputError
    from edgeship.runtime import PostOptions, RunOptions, SourceOptions

    video, _ = digits_video
    grouped = RunOptions(source=SourceOptions(timeout_s=5), post=PostOptions(task="classify", top_k=2, threshold=0.0))
    assert grouped == RunOptions().updated(open_timeout=5, task="classify", top_k=2, threshold=0.0)
    rows = {}
    for name, kwargs in (("grouped", {"options": grouped}), ("flat", {"open_timeout": 5, "task": "classify", "top_k": 2, "threshold": 0.0})):
        out = tmp_path / f"{name}.jsonl"
        s = build_pipeline(art["tflite_int8"], str(video), sinks=[f"jsonl:{out}"], max_frames=4, handle_signals=False, **kwargs).run()
        assert s.frames_processed == 4 and s.task == "classify"
        rows[name] = [[c["label"] for c in json.loads(ln)["classification"]] for ln in out.read_text().splitlines()]
    assert rows["grouped"] == rows["flat"] and all(len(r) == 2 for r in rows["flat"])
    from edgeship.runtime.processing.anchors import PRESETS

    assert RunOptions().updated(anchors=PRESETS["ssd-300"]).post.anchors is PRESETS["ssd-300"]  # a layout object too
    # a flat keyword on top of a group overrides it
    assert RunOptions().updated(top_k=3).post.top_k == 3 and grouped.updated(top_k=1).post.task == "classify"
    for bad, message in (({"threshold": 2}, "threshold: Input should be less than or equal to 1"),
                         ({"threads": 0}, "threads: "), ({"task": "segment"}, "task: "), ({"colour": "RGB"}, "unknown option(s) colour")):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
            build_pipeline(art["tflite_int8"], str(video), handle_signals=False, **bad)
        assert "\n" not in str(e.value)
