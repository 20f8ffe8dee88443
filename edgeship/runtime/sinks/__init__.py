"""Sinks receive every processed frame: ``open(info)``, ``write(frame, result)``, ``close()``.

An optional ``skip(frame)`` is called for frames a gate skipped (the live view and the video keep
showing them). Built from text through a registry:

    jsonl:-  jsonl:results.jsonl   one JSON object per frame, on stdout or in a file
    video:out.mp4                  annotated video file (.mp4, .avi, .mkv, .mov)
    http:8080  http:0.0.0.0:8080   /health, /metrics, /stream.mjpg (127.0.0.1 unless a host is given)

Apps register more kinds with :func:`register_sink`.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ...errors import InputError
from ..types import Frame, Result
from .files import JsonlSink, VideoSink
from .http import HttpServer, HttpSink, LiveView


class Sink(Protocol):
    def open(self, info: dict[str, Any]) -> None: ...
    def write(self, frame: Frame, result: Result) -> None: ...
    def close(self) -> None: ...


def _http(arg: str) -> HttpSink:
    host, _, port = arg.rpartition(":")
    try:
        return HttpSink(host or "127.0.0.1", int(port))
    except ValueError:
        raise InputError(f"http sink needs http:PORT or http:HOST:PORT, got http:{arg}") from None


# registry: kind -> factory(argument text) -> sink
SINKS: dict[str, Callable[[str], Any]] = {
    "jsonl": lambda arg: JsonlSink(arg or "-"),
    "video": lambda arg: VideoSink(arg),
    "http": _http,
}


def register_sink(kind: str, factory: Callable[[str], Any]) -> None:
    """Make ``kind:ARG`` buildable by :func:`make_sink`."""
    SINKS[kind] = factory


def make_sink(text: str) -> Any:
    """Build a sink from ``kind:ARG`` (see the module docstring)."""
    kind, sep, arg = str(text).partition(":")
    if kind not in SINKS or (not sep and kind != "jsonl"):
        raise InputError(f"sink must look like {', '.join(k + ':...' for k in SINKS)}, got {text!r}")
    if kind == "video" and not arg:
        raise InputError("video sink needs a file name, e.g. video:out.mp4")
    return SINKS[kind](arg)


__all__ = ["SINKS", "make_sink", "register_sink", "Sink", "JsonlSink", "VideoSink", "HttpSink", "HttpServer", "LiveView"]
