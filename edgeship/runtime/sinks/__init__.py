"""Sinks receive every processed frame: ``open(info)``, ``write(frame, result)``, ``close()``.

An optional ``skip(frame)`` is called for frames a gate skipped (the live view and the video keep
showing them). Built from text through a registry:

    jsonl:-  jsonl:results.jsonl   one JSON object per frame, on stdout or in a file
    jsonl-raw:results.jsonl        the same with every output tensor's values in full
    npz:outputs/                   every output tensor of every frame, one .npz per frame (landmarks, masks)
    video:out.mp4                  annotated video file (.mp4, .avi, .mkv, .mov)
    http:8080  http:0.0.0.0:8080   /health, /metrics, /stream.mjpg (127.0.0.1 unless a host is given;
                                   off loopback it needs a token: --token / EDGESHIP_HTTP_TOKEN)
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from ...errors import InputError
from ..types import Frame, Result
from .files import JsonlSink, NpzSink, VideoSink
from ..httpserver import HttpServer, check_port
from .http import HttpSink, LiveView


class Sink(Protocol):
    def open(self, info: dict[str, Any]) -> None: ...
    def write(self, frame: Frame, result: Result) -> None: ...
    def close(self) -> None: ...


def http_address(arg: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (the argument of an ``http:`` sink) -> (host, port); 127.0.0.1 by default."""
    host, _, port = arg.rpartition(":")
    if not port.strip().isdigit():
        raise InputError(f"http sink needs http:PORT or http:HOST:PORT, got http:{arg}")
    return host or "127.0.0.1", check_port(port, f"http sink port in http:{arg}")


def _http(arg: str, token: str | None) -> HttpSink:
    host, port = http_address(arg)
    return HttpSink(host, port, token=token)


# registry: kind -> factory(argument text, HTTP token or None) -> sink
SINKS: dict[str, Callable[[str, str | None], Any]] = {
    "jsonl": lambda arg, token: JsonlSink(arg),
    "jsonl-raw": lambda arg, token: JsonlSink(arg, include_raw=True),
    "npz": lambda arg, token: NpzSink(arg),
    "video": lambda arg, token: VideoSink(arg),
    "http": _http,
}


def split_sink(text: str) -> tuple[str, str]:
    """``kind:ARG`` -> (kind, ARG), checked against the registry (``jsonl`` and ``jsonl-raw:`` write to stdout)."""
    kind, sep, arg = str(text).partition(":")
    if kind not in SINKS or (not sep and kind != "jsonl"):
        raise InputError(f"sink must look like {', '.join(k + ':...' for k in SINKS)}, got {text!r}")
    if kind == "video" and not arg:
        raise InputError("video sink needs a file name, e.g. video:out.mp4")
    return kind, arg or ("-" if kind in ("jsonl", "jsonl-raw") else arg)


def make_sink(text: str, *, token: str | None = None) -> Any:
    """Build a sink from ``kind:ARG`` (see the module docstring); ``token`` guards an HTTP sink."""
    kind, arg = split_sink(text)
    return SINKS[kind](arg, token)


FILE_SINKS = ("jsonl", "jsonl-raw", "npz", "video")  # kinds whose argument is a file or folder (what a config may name)

__all__ = ["SINKS", "FILE_SINKS", "make_sink", "split_sink", "http_address", "Sink", "JsonlSink", "NpzSink", "VideoSink", "HttpSink", "HttpServer", "LiveView"]
