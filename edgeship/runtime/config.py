"""The deployment config: one YAML (or TOML) file names the artifact, source, task, app and sinks.

    edgeship run --config deploy.yaml [--max-frames N] [--duration S] [--json]

Validated up front with pydantic (unknown keys are errors): a wrong key, type or missing file is
one line naming the key's path, e.g. ``deploy.yaml: app.zones[0].points: expected at least 3
points``. Relative paths resolve against the config file's folder. See ``examples/*.yaml``.

Every key, its type, default, bounds and meaning: ``docs/deploy-config.md``, generated from these
models by :mod:`edgeship.runtime.reference` (each field's ``Field(description=...)``), so the
reference cannot drift from what is validated.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError, SourceError
from .apps import app_classes
from .apps.events import EVENT_SINKS
from .apps.outputs import OUTPUTS
from .drift import WatchCfg
from .places import DEVICE_PREFIX, data_dir_of
from .options import BackendOptions, InputSpecOptions, PostOptions, RunOptions, SourceOptions
from .schema import (DeviceOnlyFile, InFile, Port, Strict, checked, on_device_or_here, problem, resolve_output, resolve_path,
                     tagged_union, tags)
from .sinks.http import LIVE_FPS



AppCfg = tagged_union(app_classes())


class SourceCfg(SourceOptions):
    uri: str = Field(min_length=1, description="what to read (see the top-level source key)")

    @field_validator("uri")
    @classmethod
    def _file_exists(cls, v: str, info: ValidationInfo) -> str:
        from .sources import LIVE_KINDS, parse_source  # the one source resolver

        ctx = info.context or {}
        here = on_device_or_here(v, info, "/opt/edgeship/data/clip.mp4")  # only on the device: checked there
        if here is not None:
            return here
        try:
            kind, target = parse_source(v)
        except SourceError as e:
            raise ValueError(str(e)) from None
        if kind in LIVE_KINDS:
            return v
        p = resolve_path(Path(target), info)
        if not p.exists():
            hint = (f" (a file that is only on the device: write {DEVICE_PREFIX}{target})" if ctx.get("for_device") else "")
            raise ValueError(f"file not found: {p}{hint}")
        return str(p) if target == v.strip() else f"{kind}:{p}"


CAMERA_PLACEHOLDER = "{camera}"  # in a file sink's name or an MQTT topic: the camera's name


class CameraCfg(Strict):
    """One camera of ``cameras:`` (a site with several cameras, one process, one model)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$", description="the camera's name in results, events, topics, URLs and file names (letters, digits, _ . -; up to 32)")
    source: SourceCfg = Field(description="what this camera reads: everything the top-level source accepts, text or a section (uri, max_fps, loop...)")
    required: bool = Field(False, description="a required camera that does not open (or is lost for good) ends the run; others are reported and retried")
    app: Optional[AppCfg] = Field(None, description="this camera's app settings (zones, lines, trigger, outputs...): merged over the top-level app, key by key")

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, v: Any) -> Any:
        return {"uri": str(v)} if isinstance(v, (str, int)) and not isinstance(v, bool) else v


def merge_app(top: Any, own: Any) -> Any:
    """A camera's app section: the top-level one with the camera's keys on top (mappings merged key by key,
    lists and values replaced)."""
    if not isinstance(top, dict) or not isinstance(own, dict):
        return own if own is not None else top
    out = dict(top)
    for k, v in own.items():
        out[k] = merge_app(top.get(k), v) if isinstance(v, dict) and isinstance(top.get(k), dict) else v
    return out


class DeployBackend(BackendOptions):
    pin: Optional[bool] = Field(None, description="a deployment is the entry point: it pins capture and inference when there are 2+ CPUs")


class ServerCfg(Strict):
    host: str = Field("127.0.0.1", description="address to listen on (anything but loopback needs a token)")
    port: Port = Field(8080, description="TCP port (the device's health check reads it)")
    token: Optional[str] = Field(None, validate_default=True, description="required off loopback (8+ characters)")
    dashboard: bool = Field(True, description="serve the dashboard page at /")
    max_fps: float = Field(LIVE_FPS, gt=0, description="the live view's frame rate cap")
    tls_cert: Optional[DeviceOnlyFile] = Field(None, description="PEM certificate (chain): serve HTTPS (TLS 1.2+) instead of HTTP, with tls_key; in a bundle a device:PATH")
    tls_key: Optional[DeviceOnlyFile] = Field(None, description="the certificate's unencrypted PEM private key, readable by the service user only; in a bundle a device:PATH (keys never travel in bundles)")

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerCfg":
        from .tls import check_pair

        checked(check_pair)(self.tls_cert, self.tls_key, ("tls_cert", "tls_key"))
        return self

    @property
    def tls(self) -> tuple[str, str] | None:
        """(certificate, key) for the server, or None for plain HTTP."""
        return (str(self.tls_cert), str(self.tls_key)) if self.tls_cert is not None else None

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        from .httpserver import check_token  # the server's own rule

        return checked(check_token)(info.data.get("host", "127.0.0.1"), v)


class DeployConfig(PostOptions):
    """The whole deployment: the run's option groups (the post-processing keys at the top level) plus
    what to run, the app, the sinks and the server."""

    artifact: InFile = Field(description="the model: a .tflite or .xml (with its manifest); in a bundle, the bundled one")
    source: Optional[SourceCfg] = Field(None, description="camera index or /dev/videoN, rtsp:// or http:// URL, gst:PIPELINE, image folder, video file, or device:PATH; text, or a section with uri (one camera; several: cameras)")
    cameras: list[CameraCfg] = Field([], description="several cameras against one loaded model, in one process: each with a name, a source and its own app settings (instead of source)")
    watch: WatchCfg = Field(WatchCfg(), description="drift and int8 saturation watch against the calibration profile in the manifest (on by default; edgeship run --no-watch)")
    labels: Optional[InFile] = Field(None, description="class names file (default: the manifest's)")
    input_spec: Optional[InputSpecOptions] = Field(None, description="preprocessing for a model without a manifest")
    backend: DeployBackend = Field(DeployBackend(), description="which runtime runs the model, and how")
    app: Optional[AppCfg] = Field(None, description="the use case: security, industrial or robot")
    sinks: list[str] = Field([], description="result files: jsonl:FILE, jsonl-raw:FILE, npz:DIR, video:FILE")
    server: Optional[ServerCfg] = Field(None, description="the HTTP server: /health, /metrics, the live view and the dashboard")
    max_frames: Optional[int] = Field(None, ge=1, description="stop after this many frames taken from the source")
    duration: Optional[float] = Field(None, gt=0, description="stop after this many seconds")

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, v: Any) -> Any:
        return {"uri": str(v)} if isinstance(v, (str, int)) and not isinstance(v, bool) else v

    @model_validator(mode="before")
    @classmethod
    def _camera_apps(cls, data: Any) -> Any:
        """Each camera's app = the top-level app with the camera's own keys on top; a security camera is named."""
        if not isinstance(data, dict) or not isinstance(data.get("cameras"), list):
            return data
        top = data.get("app")
        cams = []
        for cam in data["cameras"]:
            if isinstance(cam, dict) and (top is not None or cam.get("app") is not None):
                app = merge_app(top, cam.get("app"))
                if isinstance(app, dict) and app.get("type") == "security" and "camera" not in (cam.get("app") or {}):
                    app = {**app, "camera": cam.get("name", "camera")}
                cam = {**cam, "app": app}
            cams.append(cam)
        return {**data, "cameras": cams}

    @model_validator(mode="after")
    def _one_or_many(self) -> "DeployConfig":
        if self.source is None and not self.cameras:
            raise ValueError("give source: (one camera) or cameras: (several)")
        if self.source is not None and self.cameras:
            raise ValueError("give source: (one camera) or cameras: (several), not both")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"cameras: names must be unique, got {', '.join(dup)} more than once")
        if len(self.cameras) > 1:
            shared = [s for s in self.sinks if CAMERA_PLACEHOLDER not in s and not s.endswith(":-")]
            if shared:
                raise ValueError(f"sinks: with several cameras each file needs {CAMERA_PLACEHOLDER} in its name "
                                 f"(one file per camera), got {shared[0]!r}")
        return self

    @property
    def camera_list(self) -> list[CameraCfg]:
        """The cameras to run: ``cameras``, or the one ``source`` as a camera named by its source."""
        if self.cameras:
            return list(self.cameras)
        return [CameraCfg.model_construct(name="camera", source=self.source, required=True, app=self.app)]

    @field_validator("sinks")
    @classmethod
    def _sinks(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from .sinks import FILE_SINKS

        out = []
        for s in v:
            kind, sep, arg = s.partition(":")
            if kind not in FILE_SINKS:
                raise ValueError(f"sinks take {' | '.join(k + ':FILE' for k in FILE_SINKS)} (the HTTP server is 'server:'), "
                                 f"got {s!r}")
            if not arg:
                raise ValueError(f"{kind} sink needs a file, got {s!r}")
            out.append(s if arg == "-" else f"{kind}:{resolve_output(Path(arg), info)}")
        return out

    def run_options(self, *, realtime: bool = False, source_cfg: Any = None) -> RunOptions:
        """The run's option groups; ``realtime`` stands in when the source does not say (an app's default).
        ``source_cfg``: a camera's source section (default: ``source``)."""
        src_cfg = source_cfg if source_cfg is not None else self.source
        source = SourceOptions(**{k: getattr(src_cfg, k) for k in SourceOptions.model_fields})
        if source.realtime is None:
            source = source.model_copy(update={"realtime": realtime})
        return RunOptions(source=source, backend=BackendOptions(**self.backend.model_dump()),
                          post=PostOptions(**{k: getattr(self, k) for k in PostOptions.model_fields}),
                          input_spec=self.input_spec, watch=self.watch)


# ---- loading -------------------------------------------------------------------------------------------
def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key written twice in one mapping (YAML would keep the last)."""
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<: *anchor" merges another mapping in
                continue
            key = loader.construct_object(key_node, deep=True)
            if key != "<<" and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=deep)

    UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=UniqueKeys)  # noqa: S506 - a SafeLoader subclass


def read_mapping(path: Path) -> dict:
    """Parse a YAML (.yaml/.yml) or TOML (.toml) file into a dict."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); expected YAML or TOML") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes); expected YAML or TOML")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = load_yaml(text)
    except Exception as e:  # yaml.YAMLError / tomllib.TOMLDecodeError
        mark = getattr(e, "problem_mark", None)
        if getattr(e, "problem", None) and mark is not None:  # YAML: what is wrong, and where
            first = f"{' '.join(str(e.problem).split())} (line {mark.line + 1}, column {mark.column + 1})"
        else:
            first = " ".join(str(e).split())[:300]
        raise ConfigError(f"{path}: not valid {'TOML' if path.suffix.lower() == '.toml' else 'YAML'}: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


# the ``type`` tags of every plugin registry: pydantic puts them in error locations, key paths leave them out
_TAGS = tags(app_classes()) | tags(EVENT_SINKS.values()) | tags(OUTPUTS.values())


def key_path(loc: tuple) -> str:
    """pydantic's error location -> ``app.zones[0].points`` (discriminator tags dropped)."""
    out = ""
    prev: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _TAGS and (prev == "app" or isinstance(prev, int)):
            pass
        elif isinstance(part, str) and "[" in part:  # function-after[...] wrappers
            pass
        else:
            out += ("." if out else "") + str(part)
        prev = part
    return out or "(top level)"


def load_config(path: str | os.PathLike) -> DeployConfig:
    """Read and validate a deployment config; a problem raises ConfigError naming the key's path.

    A config in a release (next to its ``release.json``) writes its relative outputs under the
    device's data folder (see :mod:`edgeship.runtime.places`)."""
    p = Path(path)
    folder = p.resolve().parent
    return validate_config(read_mapping(p), base=folder, where=str(path), data_dir=data_dir_of(folder))


def validate_config(data: dict, *, base: str | os.PathLike, where: str | None,
                    names: dict[str, str] | None = None, data_dir: str | os.PathLike | None = None,
                    for_device: bool = False) -> DeployConfig:
    """Validate a parsed config (relative paths against ``base``); ``where`` names it in the one-line error.

    The runtime, ``edgeship bundle`` and ``edgeship run``'s flags all call this: a config that bundles is
    one that runs. ``names`` renames a key path in the error (``run`` names its flags: ``--source``).
    ``data_dir``: where relative outputs go (a release's ``DEVICE_ROOT/data``; default ``base``).
    ``for_device``: validated on a workstation for a device (``bundle``): ``device:`` paths are left
    for the device to check.
    """
    context = {"base": str(base), "data": str(data_dir) if data_dir is not None else None, "for_device": for_device}
    try:
        return DeployConfig.model_validate(data, context=context)
    except ValidationError as e:
        errs = e.errors(include_url=False)
        first = errs[0]
        more = f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
        loc = key_path(first["loc"])
        loc = next((flag for key, flag in (names or {}).items() if loc == key or loc.startswith((key + ".", key + "["))), loc)
        raise ConfigError(f"{where + ': ' if where else ''}{loc}: {problem(first)}{more}") from None
    except ConfigError as e:  # raised by helpers such as parse_mqtt_url
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None
