"""``edgeship run``: real-time inference on a camera, stream, folder or video (parses options only)."""

from __future__ import annotations

from typing import Any

import click

from .. import formats
from ..limits import MAX_OUTPUT_QUEUE, MAX_THREADS
from ..records import RunSummary
from ..runtime.processing import TASKS
from ..runtime.processing.anchors import ANCHOR_THRESHOLD, AnchorSpec, GridAnchorSpec
from ..runtime.processing.anchors import PRESETS as ANCHOR_PRESETS
from ..runtime.processing.detect import DETECT_THRESHOLD, NMS_IOU
from ._common import FiniteRange, check_output_folder, echo_err, emit_json, format_table
from ._spec import spec_options, spec_overrides



@click.command("run")
@click.argument("artifact", type=click.Path(dir_okay=False), required=False)
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None, help="Deployment config (YAML/TOML): artifact, source, task, app (security|industrial|robot), sinks, server. Only --max-frames, --duration, --log-every and --json combine with it.")
@click.option("--source", "-s", "sources", multiple=True, metavar="[NAME=]SOURCE", help="Camera index or /dev/videoN, rtsp:// or http:// URL, gst:PIPELINE, image folder or video file. Repeat as NAME=SOURCE for several cameras against one model in one process (--source door=rtsp://... --source yard=rtsp://...); file sinks then need {camera} in their names.")
@click.option("--task", type=click.Choice(list(TASKS)), default=None, help="Post-processing (default: the manifest's task, else guessed from the outputs).")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None, help="Class names: one per line (# comments and blank lines ignored), a JSON list or a JSON {id: name} object (default: the manifest's labels).")
@click.option("--sink", "sinks", multiple=True, metavar="KIND:ARG", help="jsonl:- | jsonl:FILE | jsonl-raw:FILE (every output in full) | npz:DIR (one .npz of all outputs per frame) | video:FILE.mp4 | http:[HOST:]PORT (repeatable; default jsonl:- unless --json).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after N frames taken from the source.")
@click.option("--duration", type=FiniteRange(min=0, min_open=True), default=None, help="Stop after S seconds.")
@click.option("--threads", type=click.IntRange(1, MAX_THREADS), default=None, help="Inference threads.")
@click.option("--backend", type=click.Choice(formats.backend_names()), default=None, help="Override the backend chosen from the manifest / suffix.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device: CPU, GPU, NPU, AUTO.")
@click.option("--hint", type=click.Choice(("latency", "throughput")), default="latency", show_default=True, help="OpenVINO performance hint.")
@click.option("--precision", type=click.Choice(("f32", "f16", "bf16")), default=None, help="OpenVINO inference precision (f32 stops bf16 on AMX CPUs).")
@click.option("--realtime", is_flag=True, help="Play files at their frame rate like a camera, dropping frames the model cannot keep up with (default: every frame).")
@click.option("--loop", is_flag=True, help="Restart a video file or folder when it ends.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes reported per frame (classify).")
@click.option("--threshold", type=FiniteRange(0, 1), default=None,
              help=f"Minimum score (detect default {DETECT_THRESHOLD:g}, anchor heads {ANCHOR_THRESHOLD:g}, classify 0).")
@click.option("--anchors", type=click.Choice(sorted(ANCHOR_PRESETS)), default=None,
              help="--task detect on an anchor-based SSD head (box regressions + scores per anchor): the anchor layout. "
                   "blazeface-short / blazeface-full = MediaPipe face detection (128x128, 896 anchors / 192x192); "
                   "ssd-300 = TF Object Detection API ssd_mobilenet_v1/v2_coco, ssdlite_mobilenet_v2_coco exported "
                   "without post-processing (raw box_encodings (1, 1917, 4) + class_predictions (1, 1917, 1+C), "
                   "class 0 = background). Other layouts: anchors: {type: mediapipe | tf-od, ...} in a --config.")
@click.option("--iou", type=FiniteRange(0, 1), default=None,
              help=f"NMS IoU threshold for detection [{NMS_IOU:g}; with --anchors the layout's: {AnchorSpec.iou:g} "
                   f"MediaPipe, {GridAnchorSpec.iou:g} TF OD API].")
@click.option("--source-timeout", type=FiniteRange(min=0, min_open=True), default=10.0, show_default=True, help="Seconds to wait for the source to open.")
@click.option("--reconnect-timeout", type=FiniteRange(min=0, min_open=True), default=None, help="Give up on a lost stream after S seconds (default: keep retrying).")
@click.option("--pin/--no-pin", "pin", default=None, help="Pin the capture thread to one CPU and inference to the others (default: on with 2+ CPUs; it keeps them from evicting each other's cache).")
@click.option("--output-queue", type=click.IntRange(1, MAX_OUTPUT_QUEUE), default=2, show_default=True, help="Inferred frames that may wait for post-processing and the sinks (their own thread) before the model waits for them; raise it for bursty sinks such as webhooks.")
@click.option("--token", "http_token", envvar="EDGESHIP_HTTP_TOKEN", default=None, metavar="TOKEN",
              help="Token guarding an http: sink (8+ characters; required off 127.0.0.1). Clients send 'Authorization: "
                   "Bearer TOKEN'. Default: $EDGESHIP_HTTP_TOKEN. Prefer the variable: a flag shows in ps.")
@click.option("--tls-cert", "tls_cert", type=click.Path(dir_okay=False), default=None, metavar="PEM",
              help="Serve the http: sink over HTTPS (TLS 1.2+) with this PEM certificate (chain); needs --tls-key. "
                   "With a token off 127.0.0.1 this keeps the token and the live view off the wire in clear.")
@click.option("--tls-key", "tls_key", type=click.Path(dir_okay=False), default=None, metavar="PEM",
              help="The --tls-cert certificate's unencrypted PEM private key (readable only by the user that runs edgeship).")
@click.option("--log-every", "log_every", type=FiniteRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Log what runs, the first frame, then a status line every SECONDS (frames, fps, skipped, source) "
                   "to stderr: the service log of a device (bundles set 60). Combines with --config.")
@spec_options
@click.option("--no-watch", "no_watch", is_flag=True,
              help="Turn off the drift watch (on when the manifest has a calibration profile: drift and recovered events, "
                   "/health 'degraded: drift', the summary's episodes). Combines with --config.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as one JSON object on stdout.")
def run(artifact: str | None, sources: tuple[str, ...], config: str | None, sinks: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Run ARTIFACT (.tflite or OpenVINO .xml, with its manifest) on a live source.

    Capture runs in its own thread into a one-slot buffer, so the model always sees the newest
    frame; streams that drop are reopened with backoff. Ctrl-C or SIGTERM stops cleanly and
    flushes every sink. The summary (fps, latency percentiles, skipped frames, reconnects) goes to
    stderr, or to stdout as JSON with --json.

    \b
    Example:
      edgeship run model_int8.tflite --source rtsp://10.0.0.5/stream --sink http:8080
      edgeship run model_int8.tflite --source 0 --sink jsonl:results.jsonl --duration 60
      edgeship run det.xml --source clip.mp4 --task detect --sink video:out.mp4 --json
      edgeship run --config examples/security.yaml --duration 60
      edgeship run det.xml --source door=rtsp://10.0.0.5/a --source yard=rtsp://10.0.0.6/a --sink http:8080
    """
    if config is not None:
        return _run_config(config, artifact, sources, sinks, as_json, options)
    if artifact is None or not sources:
        raise click.UsageError("give ARTIFACT and --source, or --config deploy.yaml")
    source: Any = sources[0] if len(sources) == 1 else _cameras(sources)

    if as_json and any(_to_stdout(s) for s in sinks):
        raise click.UsageError("--json prints the summary on stdout; send results to a file (jsonl:FILE) instead of jsonl:-")
    if not sinks and not as_json:
        sinks = ("jsonl:-",)
    cfg = deploy_config(artifact, source, sinks, options)
    _report(_deploy(cfg, max_frames=None, duration=None, log_every=options.get("log_every")), as_json)


def _to_stdout(sink: str) -> bool:
    from ..runtime.sinks import split_sink

    try:
        kind, arg = split_sink(sink)
    except Exception:  # noqa: BLE001 - a bad sink is reported when the config is built
        return False
    return kind.startswith("jsonl") and arg == "-"


# the flags that combine with --config (everything else is the config file's to say)
CONFIG_FLAGS = ("config", "max_frames", "duration", "log_every", "as_json", "no_watch")
# the deploy config's key paths under the flags that set them (for the one-line error)
FLAG_NAMES = {"artifact": "ARTIFACT", "source": "--source", "cameras": "--source", "labels": "--labels", "sinks": "--sink",
              "server.token": "--token", "server.tls_cert": "--tls-cert", "server.tls_key": "--tls-key",
              "server": "--sink http: (with --tls-cert/--tls-key)", "input_spec": "--scale/--mean/--std/--color-order"}


def _cameras(sources: tuple[str, ...]) -> list[dict[str, str]]:
    """Repeated ``--source NAME=SOURCE`` as the config's ``cameras:`` list (names checked by the config)."""
    out = []
    for text in sources:
        name, sep, uri = text.partition("=")
        if not sep or not name or "://" in name or not uri:
            raise click.UsageError(f"with several --source flags each is NAME=SOURCE (e.g. door=rtsp://10.0.0.5/a), "
                                   f"got {text!r}")
        out.append({"name": name, "uri": uri})
    return out


def deploy_config(artifact: str, source: Any, sinks: tuple[str, ...], options: dict[str, Any]):
    """``run``'s flags as the deployment config they stand for (validated like a config file). ``source``: one
    source text, or a list of {name, uri} cameras."""
    import os

    from ..runtime.config import validate_config
    from ..runtime.sinks import http_address, split_sink

    files, server = [], None
    for text in sinks:
        kind, arg = split_sink(text)
        if kind != "http":
            check_output_folder(arg, "--sink")
            files.append(f"{kind}:{arg}")
        elif server is not None:
            raise click.UsageError("one --sink http:... per run (it serves the stream, /metrics and the dashboard)")
        else:
            host, port = http_address(arg)
            server = {"host": host, "port": port, "token": options["http_token"], "tls_cert": options["tls_cert"],
                      "tls_key": options["tls_key"]}
    if server is None and (options["tls_cert"] or options["tls_key"]):
        raise click.UsageError("--tls-cert/--tls-key serve the http: sink over HTTPS: add --sink http:PORT")
    spec = spec_overrides(options)
    spec.pop("channels", None)  # implied by --color-order GRAY
    source_opts = {"loop": options["loop"], "realtime": options["realtime"] or None,  # no flag: the default
                   "timeout_s": options["source_timeout"], "reconnect_timeout_s": options["reconnect_timeout"]}
    data = {
        "artifact": artifact, "task": options["task"], "labels": options["labels"], "anchors": options["anchors"],
        "threshold": options["threshold"], "iou": options["iou"], "top_k": options["top_k"],
        "source": None,
        "backend": {"name": options["backend"], "threads": options["threads"], "device": options["device"],
                    "hint": options["hint"], "precision": options["precision"], "pin": options["pin"],
                    "output_queue": options["output_queue"]},
        "input_spec": spec or None, "sinks": files, "server": server,
        "max_frames": options["max_frames"], "duration": options["duration"],
        "watch": {"enabled": False} if options.get("no_watch") else None,
    }
    if isinstance(source, list):
        data["cameras"] = [{"name": c["name"], "source": {"uri": c["uri"], **source_opts}} for c in source]
    else:
        data["source"] = {"uri": source, **source_opts}
    return validate_config({k: v for k, v in data.items() if v is not None}, base=os.getcwd(), where=None,
                           names=FLAG_NAMES)


def _deploy(cfg, *, max_frames: int | None, duration: float | None, log_every: float | None = None):
    import logging

    from ..runtime.apps.deploy import build_deployment

    if log_every is not None:
        logging.getLogger("edgeship.status").setLevel(logging.INFO)
    # process-wide settings are the entry point's: fixed malloc thresholds, and the config's --pin default
    # (None: pin when there are 2+ CPUs) rather than the Python API's (no pinning)
    return build_deployment(cfg, max_frames=max_frames, duration=duration, keep_freed_frames=True,
                            log_every=log_every).run()


def _report(summary: RunSummary, as_json: bool) -> None:
    from ..runtime.pipeline import failed

    if as_json:
        emit_json(summary)
    else:
        echo_err(format_summary(summary))
        if summary.app:
            echo_err("app: " + ", ".join(f"{k}={v}" for k, v in summary.app.items() if not isinstance(v, (dict, list))))
        if summary.cameras:
            echo_err(format_cameras(summary))
        for line in drift_lines(summary):
            echo_err(line)
    err = failed(summary)
    if err is not None:
        raise err


def drift_lines(summary: RunSummary) -> list[str]:
    """The drift watch's episodes, camera by camera (nothing when the watch was off or quiet)."""
    per = {name: c.get("drift") for name, c in (summary.cameras or {}).items()} if summary.cameras else {None: summary.drift}
    out = []
    for name, d in per.items():
        for e in (d or {}).get("episodes") or []:
            what = ", ".join(f"{k} {v:.2f}" for k, v in e["what"].items())
            lasted = f"{e['end'] - e['start']:.1f} s" if e.get("end") is not None else "until the end"
            out.append(f"drift{' on ' + name if name else ''}: {what} ({lasted})")
    return out


def _run_config(config: str, artifact: str | None, sources: tuple[str, ...], sinks: tuple[str, ...], as_json: bool,
                options: dict[str, Any]) -> None:
    """``--config``: everything but --max-frames / --duration / --json comes from the file."""
    from ..runtime.config import load_config

    if artifact is not None or sources or sinks:
        raise click.UsageError("--config names the artifact, source and sinks; do not pass them on the command line too")
    ctx = click.get_current_context()
    given = [p for p in ctx.command.params if isinstance(p, click.Option) and p.name not in CONFIG_FLAGS
             and ctx.get_parameter_source(p.name) == click.core.ParameterSource.COMMANDLINE]
    if given:
        flag = max(given[0].opts, key=len)
        raise click.UsageError(f"{flag} does not combine with --config: set it in the config file (with --config only "
                               "--max-frames, --duration, --log-every, --no-watch and --json apply)")
    cfg = load_config(config)
    if options.get("no_watch"):
        cfg = cfg.model_copy(update={"watch": cfg.watch.model_copy(update={"enabled": False})})
    _report(_deploy(cfg, max_frames=options.get("max_frames"), duration=options.get("duration"),
                    log_every=options.get("log_every")), as_json)


def format_cameras(s: RunSummary) -> str:
    """One row per camera of a multi-camera run."""
    rows = []
    for name, c in (s.cameras or {}).items():
        g2g = c.get("glass_to_glass_ms") or {}
        app = c.get("app") or {}
        app_text = (f"{app.get('events')} events" if "events" in app else
                    f"pass {app['session']['pass']} fail {app['session']['fail']}" if "session" in app else "")
        rows.append([name, c.get("state"), c.get("frames_processed"), f"{float(c.get('processed_fps') or 0):.1f}",
                     c.get("frames_dropped"), c.get("frames_skipped_gate"), c.get("reconnects"), g2g.get("p50", "-"),
                     g2g.get("p99", "-"), app_text])
    return format_table(["camera", "state", "frames", "fps", "dropped", "gated", "reconnects", "g2g p50 ms", "g2g p99 ms",
                         "app"], rows)


def format_summary(s: RunSummary) -> str:
    """The run summary as a short human-readable block (stderr)."""
    head = (f"{s.frames_processed} frames in {s.duration_s:.1f}s ({s.stopped_by}): "
            f"{s.processed_fps:.1f} fps processed, source {s.source_fps:.1f} fps, "
            f"{s.skipped} skipped ({s.frames_dropped} dropped, {s.frames_skipped_gate} gated), "
            f"{s.reconnects} reconnects")
    rows = []
    for name, st in list(s.latency_ms.items()) + [("glass_to_glass", s.glass_to_glass_ms), ("frame_age", s.frame_age_ms)]:
        if st.get("count"):
            rows.append([name, st["p50"], st["p90"], st["p99"], st["max"]])
    return head + "\n" + format_table(["stage (ms)", "p50", "p90", "p99", "max"], rows)
