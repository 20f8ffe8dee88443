"""Deploy bundles: one reproducible ``.tar.gz`` holding everything a device needs to run a model.

Contents (flat, sorted, fixed mtimes/owners, gzip mtime 0, so the same inputs give the same bytes)::

    release.json            version, target, artifact, format, run command, health port, Pythons,
                            system_opencv (the device venv then sees the system's cv2: GStreamer cameras)
    model/<artifact files>  the artifact (.tflite, or .xml + .bin) and its manifest
    deploy.yaml             the deployment config (given with --config, artifact path rewritten)
    run.sh                  what the service runs: ``edgeship run ...`` from the release's venv
    requirements/pyX.Y.txt  runtime requirements per Python version the target supports
    wheels/*.whl            edgeship itself; with wheels, every dependency for the target platform
    systemd/edgeship.service.in   the unit (``@DEVICE_ROOT@`` filled in on the device)
    agent.py                the device agent (supervisor for ``--init none``)
    SHA256SUMS              sha256 of every other file
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
import shlex
import tarfile
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import formats
from ..errors import BackendError, DeployError, InputError
from ..fileio import atomic_path
from ..manifest import Manifest, manifest_path
from . import wheels as wheelmod
from .agent import SECRET_FILES, VERSION_RE
from .profiles import Profile, get_target
from .systemd import unit_template

log = logging.getLogger(__name__)
AGENT = Path(__file__).with_name("agent.py")


@dataclass
class BundleResult:
    """What :func:`build_bundle` wrote."""

    path: Path
    version: str
    target: str
    sha256: str
    size: int
    files: list[str] = field(default_factory=list)
    wheels: list[str] = field(default_factory=list)
    python: list[str] = field(default_factory=list)
    system_opencv: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "version": self.version, "target": self.target, "sha256": self.sha256,
                "size": self.size, "files": self.files, "wheels": self.wheels, "python": self.python,
                "system_opencv": self.system_opencv}


def artifact_files(artifact: Path) -> tuple[str, list[Path]]:
    """The artifact's format and every file that belongs to it (model, companions such as an IR's .bin, manifest)."""
    artifact = Path(artifact)
    if not artifact.is_file():
        raise InputError(f"artifact {artifact} does not exist: expected a {formats.describe_suffixes()} file")
    manifest = Manifest.load_optional(artifact)
    fs = formats.resolve(artifact, manifest)
    fs.check_files(artifact)
    files = fs.files(artifact)
    if manifest is not None:
        files.append(manifest_path(artifact))
    return fs.name, files


def check_model(artifact: Path, fmt: str) -> None:
    """Open the model the way the device will (its tensors), so that a file that is not a model is
    refused at bundle time instead of found out on the device as a rollback."""
    fs = formats.get(fmt)
    try:
        fs.read_tensors(artifact)
    except (ImportError, BackendError) as e:  # the format's runtime is not installed on this workstation
        log.warning("cannot open %s here to check it: %s", artifact, e)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise InputError(f"{artifact} is not a valid {fs.title} model: {first[:200]}") from None


class Expand(str):
    """An argv word of edgeship's own in which ``$REL`` and ``${EDGESHIP_HTTP_PORT:-N}`` are expanded by
    ``run.sh``. Every other word (the user's ``--run-arg``, sources, passwords) is quoted literally."""


SERVICE_LOG_EVERY = 60  # seconds between the service's status lines (what `edgeship device logs` shows)
_OWN_VARS = re.compile(r"\$REL\b|\$\{EDGESHIP_HTTP_PORT:-\d+\}")


def run_command(artifact_rel: str, *, config: bool, source: str | None, http_port: int, task: str | None,
                extra_args: tuple[str, ...] = ()) -> list[str]:
    """The ``edgeship run`` argv of the service, with ``$REL`` standing for the release folder."""
    status = ["--log-every", str(SERVICE_LOG_EVERY)]
    if config:
        return ["run", "--config", Expand("$REL/deploy.yaml"), *status, *extra_args]
    argv = ["run", Expand(f"$REL/{artifact_rel}"), "--source", source or "", *status, "--sink",
            Expand("http:127.0.0.1:${EDGESHIP_HTTP_PORT:-%d}" % http_port)]
    if task:
        argv += ["--task", task]
    return argv + list(extra_args)


def shell_word(word: str) -> str:
    """One argv word for ``/bin/sh``: literal (single-quoted) unless it is an :class:`Expand` word, whose
    own variables alone are left to the shell."""
    if not isinstance(word, Expand):
        return shlex.quote(word)
    parts, pos = [], 0
    for m in _OWN_VARS.finditer(word):
        if m.start() > pos:
            parts.append(shlex.quote(word[pos:m.start()]))
        parts.append('"' + m.group(0).replace("$REL", "${REL}") + '"')
        pos = m.end()
    if pos < len(word):
        parts.append(shlex.quote(word[pos:]))
    return "".join(parts) or "''"


def run_script(argv: list[str]) -> str:
    """``run.sh``: resolve the release folder (through ``current``) and exec the venv's edgeship."""
    return (
        "#!/bin/sh\n"
        "# Generated by edgeship bundle: runs this release from its own venv.\n"
        'REL=$(cd "$(dirname "$0")" && pwd -P)\n'
        'EDGESHIP_RELEASE=$(basename "$REL")\n'
        "export REL EDGESHIP_RELEASE\n"
        'exec "$REL/venv/bin/edgeship" ' + " ".join(shell_word(a) for a in argv) + "\n"
    )


@dataclass
class ShippedSource:
    """A service's source as the release holds it: ``uri`` (rewritten into the release for a packed
    file), the files packed for it (release path -> workstation path) and the files it needs on the
    device (``device:`` paths, checked by the preflight)."""

    uri: str
    files: dict[str, Path] = field(default_factory=dict)
    device_files: list[str] = field(default_factory=list)

    @property
    def packed(self) -> bool:
        return bool(self.files)


def ship_source(uri: str) -> ShippedSource:
    """Where a validated source lives (see :mod:`edgeship.runtime.places`): a camera or stream is
    kept; a ``device:`` file is left for the device; a workstation video or image folder is packed
    under ``media/`` and the source rewritten to it."""
    from ..runtime.places import MEDIA_DIR, split_device
    from ..runtime.sources import IMAGE_SUFFIXES, LIVE_KINDS, parse_source

    on_device, text = split_device(uri)
    if on_device:
        return ShippedSource(uri, device_files=[text])
    kind, target = parse_source(uri)
    if kind in LIVE_KINDS:
        return ShippedSource(uri)
    p = Path(target)
    rel = f"{MEDIA_DIR}/{p.name}"
    if p.is_dir():
        files = {f"{rel}/{f.relative_to(p).as_posix()}": f for f in sorted(p.rglob("*"))
                 if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES}
        if not files:
            raise InputError(f"source folder {p} holds no images to ship; expected {', '.join(sorted(IMAGE_SUFFIXES))} files")
    elif p.is_file():
        files = {rel: p}
    else:
        raise InputError(f"source {p} does not exist on this machine: ship a file that does, or write "
                         f"device:{target} for a file that is only on the device")
    return ShippedSource(rel if target == uri.strip() else f"{kind}:{rel}", files=files)


RELEASE_CONFIG_HEADER = """\
# Written by edgeship bundle from {name}. Paths on the device: the artifact, labels and a shipped
# source are inside this release; relative outputs (sinks, events, queues, snapshots, counters)
# resolve under DEVICE_ROOT/data (a leading ../ is dropped), never inside releases/.
"""


def rewrite_config(config: Path, artifact: Path, artifact_rel: str) -> tuple[str, Any, ShippedSource]:
    """Validate ``config`` (YAML or TOML) with the runtime's own loader, then return it as the
    release's ``deploy.yaml`` text with its artifact, labels and a workstation source pointing into
    the release, the validated config, and the shipped source.

    A mistake in the config is refused here, with the runtime's one-line error, instead of found
    on the device as a rollback. A packed clip stands in for a camera: unless the config says
    otherwise it loops and plays at its frame rate (``loop: true, realtime: true``).
    """
    import yaml

    from ..runtime.config import read_mapping, validate_config

    data = read_mapping(config)
    # the bundle's artifact replaces whatever the config names (the release carries its own copy)
    cfg = validate_config({**data, "artifact": str(Path(artifact).resolve())}, base=config.resolve().parent,
                          where=str(config), for_device=True)
    data["artifact"] = artifact_rel
    if cfg.labels is not None:  # the labels file travels with the release, like the artifact
        data["labels"] = f"model/{Path(cfg.labels).name}"
    if cfg.cameras:  # every camera's source ships (or stays) like a single source would
        parts = []
        for i, cam in enumerate(cfg.cameras):
            one = ship_source(cam.source.uri)
            data["cameras"][i] = {**data["cameras"][i], "source": _shipped_section(data["cameras"][i].get("source"), one,
                                                                                  cam.source.uri)}
            parts.append(one)
        shipped = ShippedSource(";".join(p.uri for p in parts),
                                files={k: v for p in parts for k, v in p.files.items()},
                                device_files=sorted({f for p in parts for f in p.device_files}))
    else:
        shipped = ship_source(cfg.source.uri)
        data["source"] = _shipped_section(data.get("source"), shipped, cfg.source.uri)
    # the device-only files the config names (TLS keys and CA files), for the flash preflight
    from ..runtime.schema import device_files

    shipped = replace(shipped, device_files=sorted(set(shipped.device_files) | device_files(cfg)))
    text = RELEASE_CONFIG_HEADER.format(name=config.name) + yaml.safe_dump(data, sort_keys=False)
    return text, cfg, shipped


def _shipped_section(section: Any, shipped: ShippedSource, original: str) -> Any:
    """A config's source section (text or mapping) after :func:`ship_source`: a packed file is rewritten into the
    release and plays like a camera (looped, at its frame rate) unless the config says otherwise."""
    if not shipped.packed:
        return section
    source = section if isinstance(section, dict) else {}
    log.info("the release ships %s as %s (looped, at its frame rate, unless the config says otherwise)", original,
             shipped.uri)
    return {**source, "uri": shipped.uri, "loop": source.get("loop", True), "realtime": source.get("realtime", True)}


def config_sources(cfg: Any) -> list[str]:
    """Every source a validated deploy config reads: its cameras' or its one source."""
    return [c.source.uri for c in cfg.cameras] if cfg.cameras else [cfg.source.uri]


def _checked_source(source: str) -> str:
    """A ``--source`` checked by the runtime's own source model (one-line error naming --source)."""
    from pydantic import ValidationError

    from ..errors import ConfigError
    from ..runtime.config import SourceCfg
    from ..runtime.schema import problem

    try:
        return SourceCfg.model_validate({"uri": source}, context={"base": os.getcwd(), "for_device": True}).uri
    except ValidationError as e:
        raise ConfigError(f"--source: {problem(e.errors(include_url=False)[0])}") from None


def camera_devices(profile: Profile, uri: str) -> list[str]:
    """The device nodes a source needs on the device (what the flash preflight looks for): a V4L2
    camera's node, or the profile's camera nodes for a board-camera (``gst:``) pipeline."""
    from ..runtime.places import split_device
    from ..runtime.sources import parse_source

    if split_device(uri)[0]:
        return []
    kind, target = parse_source(uri)
    if kind == "camera":
        return [target if target.startswith("/dev/") else f"/dev/video{int(target)}"]
    return list(profile.camera_devices) if kind == "gstreamer" else []


def uses_gstreamer(value: Any) -> bool:
    """Whether a source string, or a parsed deployment config's ``source`` (text or ``{uri: ...}``),
    is a GStreamer pipeline, by the runtime's own source detection (``source_kind``)."""
    from ..runtime.sources import source_kind

    if isinstance(value, dict):
        value = value.get("source", value.get("uri"))
        return uses_gstreamer(value) if isinstance(value, (str, dict)) else False
    return isinstance(value, str) and bool(value.strip()) and source_kind(value) == "gstreamer"


def resolve_system_opencv(profile: Profile, explicit: bool | None, *, gstreamer: bool) -> bool:
    """Use the device's system OpenCV? ``explicit`` (``--system-opencv/--no-system-opencv``) wins;
    otherwise the profile's default, or yes when the service reads a ``gst:`` pipeline (pip's OpenCV
    has no GStreamer, so only the system's can open it)."""
    if explicit is not None:
        if gstreamer and not explicit:
            log.warning("the service reads a gst: source but the bundle installs pip's OpenCV, which has no GStreamer")
        return explicit
    if gstreamer and not profile.system_opencv:
        log.info("the service reads a gst: source: the bundle uses the device's system OpenCV (built with GStreamer)")
    return profile.system_opencv or gstreamer


def default_version(name: str, digest: str) -> str:
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', name)[:40]}-{digest[:12]}"


def build_bundle(artifact: str | os.PathLike, target: str | Profile, out: str | os.PathLike, *,
                 config: str | os.PathLike | None = None, source: str | None = None, task: str | None = None,
                 wheels: bool = False, wheelhouse: str | os.PathLike | None = None, python: str | None = None,
                 version: str | None = None, http_port: int | None = None,
                 edgeship_wheel: str | os.PathLike | None = None, run_args: tuple[str, ...] = (),
                 system_opencv: bool | None = None, compresslevel: int = 6) -> BundleResult:
    """Write a reproducible deploy bundle for ``target`` to ``out`` (atomically) and describe it.

    ``config`` (a deploy.yaml) or ``source`` (a camera/stream/video the service reads) is required.
    With ``wheels`` every runtime wheel for the target's platform and ``python`` (default: the
    target's stock Python) is included so the device installs without internet; ``wheelhouse``
    resolves them from a local folder instead of PyPI. ``run_args`` are added to the service's
    ``edgeship run`` command (e.g. ``--loop``, ``--threads 4``).

    ``system_opencv`` (default: the profile's ``system_opencv``, or True when the service reads a
    ``gst:`` source) leaves pip's OpenCV out of the requirements and wheels and has the device build
    the venv with ``--system-site-packages`` from its system Python, whose distribution cv2 (apt
    ``python3-opencv``, JetPack) is built with GStreamer; the flash preflight checks that cv2.
    """
    profile = get_target(target)
    if (config is None) == (source is None):
        raise InputError("a bundle needs exactly one of --config FILE or --source SRC")
    fmt, files = artifact_files(Path(artifact))
    profile.check_format(fmt)
    check_model(Path(artifact), fmt)
    port = int(http_port or profile.service.get("http_port", 8080))
    entries: dict[str, bytes] = {}
    for f in files:
        entries[f"model/{f.name}"] = f.read_bytes()
    artifact_rel = f"model/{Path(artifact).name}"
    if config is not None:
        config = Path(config)
        if not config.is_file():
            raise InputError(f"config {config} does not exist")
        text, cfg, shipped = rewrite_config(config, Path(artifact), artifact_rel)
        entries["deploy.yaml"] = text.encode()
        if cfg.labels is not None:
            entries[f"model/{Path(cfg.labels).name}"] = Path(cfg.labels).read_bytes()
        cfg_port = cfg.server.port if cfg.server is not None else None
        if cfg_port is None:
            raise InputError(f"config {config} has no HTTP server for the health check: add a 'server:' section")
        if cfg_port == 0:
            raise InputError(f"config {config}: server.port 0 picks a free port at run time; the health check needs a fixed "
                             "port (1-65535)")
        if http_port and int(http_port) != cfg_port:
            raise InputError(f"--http-port {http_port} differs from the config's server.port {cfg_port}, which is where the "
                             "runtime serves: drop --http-port or change the config")
        port = cfg_port
        sources = config_sources(cfg)
        source = sources[0]
    else:
        tls_args = [a for a in run_args if str(a).split("=", 1)[0] in ("--tls-cert", "--tls-key")]
        if tls_args:
            raise InputError(f"{tls_args[0]} in --run-arg: a --source bundle serves /health on 127.0.0.1 only; to serve "
                             "HTTPS use --config with server.tls_cert and server.tls_key as device: paths")
        shipped = ship_source(_checked_source(source))
        sources = [source]
        if shipped.packed:  # a clip stands in for a camera: looped, at its frame rate
            run_args = tuple(run_args) + tuple(a for a in ("--loop", "--realtime") if a not in run_args)
            source = Expand(f"$REL/{shipped.uri}")
    for rel, path in shipped.files.items():
        entries[rel] = path.read_bytes()
    argv = run_command(artifact_rel, config=config is not None, source=source, http_port=port, task=task,
                       extra_args=tuple(run_args))
    gst = any(uses_gstreamer(str(x)) for x in sources)
    system_opencv = resolve_system_opencv(profile, system_opencv, gstreamer=gst)
    entries["run.sh"] = run_script(argv).encode()
    pys = [python] if wheels and python else ([profile.python] if wheels else list(profile.python_versions(fmt)))
    for py in pys:
        entries[f"requirements/py{py}.txt"] = ("\n".join(profile.requirements(py, fmt, system_opencv=system_opencv)) + "\n").encode()
    own = wheelmod.edgeship_wheel(edgeship_wheel)
    entries[f"wheels/{own.name}"] = own.read_bytes()
    if wheels:
        with tempfile.TemporaryDirectory(prefix="edgeship-wheels-") as tmp:
            reqs = profile.requirements(pys[0], fmt, system_opencv=system_opencv)
            for w in wheelmod.download(profile, pys[0], reqs, own, Path(tmp), wheelhouse=wheelhouse):
                entries[f"wheels/{w.name}"] = w.read_bytes()
    manifest = Manifest.load_optional(artifact)
    entries["systemd/edgeship.service.in"] = unit_template(profile.service, target=profile.name, artifact=Path(artifact).name).encode()
    entries["agent.py"] = AGENT.read_bytes()
    content_hash = hashlib.sha256()
    for name in sorted(entries):
        content_hash.update(name.encode() + b"\0" + hashlib.sha256(entries[name]).digest())
    version = version or default_version(manifest.name if manifest else Path(artifact).stem, content_hash.hexdigest())
    if not VERSION_RE.match(version):
        raise InputError(f"release version {version!r} must be letters, digits and . _ + - (at most 81 characters, "
                         "starting with a letter or digit)")
    meta = {
        "version": version, "target": profile.name, "architecture": profile.architecture, "glibc": profile.glibc,
        "artifact": artifact_rel, "format": fmt, "precision": manifest.precision if manifest else None,
        "python": pys, "wheels": "all" if wheels else "edgeship", "http_port": port, "health_path": "/health",
        "health_scheme": "https" if config is not None and cfg.server.tls else "http",
        "run": argv, "init": ["systemd", "none"], "edgeship": wheelmod.own_version(), "system_opencv": system_opencv,
        "device_files": shipped.device_files,
        "cameras": sorted({d for x in sources for d in camera_devices(profile, str(x))}),
    }
    entries["release.json"] = (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()
    entries["SHA256SUMS"] = "".join(f"{hashlib.sha256(entries[n]).hexdigest()}  {n}\n" for n in sorted(entries)).encode()
    out = Path(out)
    with atomic_path(out) as tmp:
        write_tar(tmp, entries, level=compresslevel)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    return BundleResult(path=out, version=version, target=profile.name, sha256=digest, size=out.stat().st_size,
                        files=sorted(entries), wheels=sorted(n[7:] for n in entries if n.startswith("wheels/")), python=pys,
                        system_opencv=system_opencv)


def write_tar(path: Path, entries: dict[str, bytes], *, level: int = 6) -> None:
    """A deterministic tar.gz: sorted names, mtime 0, uid/gid 0, fixed modes, gzip header mtime 0."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({str(Path(n).parent) for n in entries if "/" in n})
            for d in dirs:
                ti = _info(d, tarfile.DIRTYPE, 0o755)
                tar.addfile(ti)
            for name in sorted(entries):
                data = entries[name]
                mode = 0o755 if name.endswith(".sh") else (0o600 if name in SECRET_FILES else 0o644)
                ti = _info(name, tarfile.REGTYPE, mode)
                ti.size = len(data)
                tar.addfile(ti, io.BytesIO(data))


def _info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, 0, 0, 0, "", ""
    return ti


def read_release(bundle: str | os.PathLike) -> dict[str, Any]:
    """``release.json`` of a bundle, after checking the whole archive reads to the end (not truncated)."""
    bundle = Path(bundle)
    if not bundle.is_file():
        raise InputError(f"bundle {bundle} does not exist")
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            meta = None
            for m in tar:
                if m.name == "release.json":
                    meta = json.loads(tar.extractfile(m).read())
                elif m.isfile():
                    tar.extractfile(m).read()  # read through: a truncated gzip fails here, not on the device
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise DeployError(f"bundle {bundle} is truncated or corrupt: {e}") from e
    if not isinstance(meta, dict) or "version" not in meta:
        raise DeployError(f"bundle {bundle} has no release.json: expected a file written by `edgeship bundle`")
    if not isinstance(meta["version"], str) or not VERSION_RE.match(meta["version"]):
        raise DeployError(f"bundle {bundle} names release version {meta['version']!r}: expected letters, digits and "
                          ". _ + - (one folder name); rebuild it with `edgeship bundle --version NAME`")
    return meta
