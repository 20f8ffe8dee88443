"""Flash one device: preflight, upload, verify on the device, install, switch, health-check, roll back.

The order is what makes it safe: nothing on the device changes until the upload is complete and
its checksums verified there; the running release is replaced only by a switch of the ``current``
symlink (atomic rename); a release that is not healthy within the timeout is switched back.

``sudo=True`` is for devices reached as a normal user with passwordless sudo (Raspberry Pi OS,
Jetson, Ubuntu): the agent and the upload run under ``sudo -n``, the code under the device root is
root-owned, and the runtime still runs unprivileged (systemd: the unit's ``User=``; ``--init
none``: the login user).

A bundle with ``system_opencv`` (``edgeship bundle --system-opencv``, the Jetson profiles, any
``gst:`` source) runs from a venv that sees the device Python's own cv2 (apt ``python3-opencv``,
JetPack: built with GStreamer): the preflight refuses a Python without cv2 and warns when its cv2
has no GStreamer.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DeployError, InputError
from ..fileio import sha256_file
from .bundle import read_release
from .profiles import get_target
from .remote import HostSpec, Remote, SSHOptions, SudoRefused, device_root_value

log = logging.getLogger(__name__)
INITS = ("auto", "systemd", "none")  # auto: what the device was flashed with, else systemd where it runs
SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")  # a unit name: never a path
ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armv7": "armv7l", "armhf": "armv7l"}


@dataclass
class FlashOptions:
    """Where and how a bundle is installed on each device.

    ``sudo``: log in as a normal user and run the device steps under passwordless ``sudo -n``
    (ignored for ``root@`` logins). ``init``: ``auto`` (default) keeps the mode the device was
    flashed with before, else systemd where it runs (as root), else edgeship's own supervisor.
    ``env``: ``KEY=VALUE`` lines for the service's environment (``DEVICE_ROOT/device.env``, 0600).
    """

    device_root: str = "/opt/edgeship"
    init: str = "auto"
    health_timeout: float = 60.0
    keep: int = 3
    python: str = "python3"
    service: str = "edgeship"
    venvs: str | None = None
    bwlimit_kbps: float | None = None
    sudo: bool = False
    env: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise InputError(f"--init must be one of {', '.join(INITS)}, got {self.init!r}")
        device_root_value(self.device_root, "--device-root")
        if not SERVICE_RE.match(self.service):
            raise InputError(f"--service must be a systemd unit name (letters, digits and - _ . @), got {self.service!r}")
        if self.keep < 2:
            raise InputError(f"--keep must be at least 2 (the running release and one to roll back to), got {self.keep}")
        for kv in self.env:
            key, sep, value = str(kv).partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) or "\n" in value or "\0" in value:
                raise InputError(f"--env takes KEY=VALUE (a variable name, one line), got {kv!r}")


@dataclass
class FlashResult:
    """The outcome on one host. ``status``: deployed, rolled-back, failed or refused."""

    host: str
    ok: bool
    status: str
    version: str | None = None
    previous: str | None = None
    running: str | None = None
    reason: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    install: dict[str, Any] = field(default_factory=dict)
    rollback: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def uses_sudo(host: HostSpec, options: FlashOptions) -> bool:
    """``--sudo`` applies to non-root logins only (a hosts file may mix ``root@`` and ``pi@``)."""
    return options.sudo and host.user != "root"


def agent_args(host: HostSpec, options: FlashOptions) -> list[str]:
    """The arguments every agent command gets: device root, init system, service, and with ``sudo``
    and ``--init none`` the login user the runtime drops to."""
    args = ["--root", host.device_root or options.device_root, "--init", options.init, "--service", options.service]
    if uses_sudo(host, options) and options.init != "systemd":  # with --init none the runtime runs as the login user
        args += ["--run-as", host.user]
    return args


def preflight_args(meta: dict[str, Any]) -> list[str]:
    """The agent's preflight arguments for a bundle: the camera devices and device files it names, its cv2."""
    nodes = meta["cameras"] if "cameras" in meta else get_target(meta["target"]).camera_devices
    devices = [a for d in nodes for a in ("--device", d)]
    cv2 = ["--system-opencv"] if meta.get("system_opencv") else []
    need = [a for f in meta.get("device_files") or () for a in ("--need-file", f)]
    return [*devices, *cv2, *need]


def activate_args(host: HostSpec, options: FlashOptions, version: str) -> list[str]:
    """The agent's activate arguments: the service's environment (the host's own variables win), the
    release, the health timeout."""
    env = [a for kv in (*options.env, *host.env) for a in ("--env", kv)]
    env += ["--env", f"EDGESHIP_HTTP_PORT={host.http_port}"] if host.http_port else []
    return [*env, "--version", version, "--timeout", str(options.health_timeout), "--restart-sec", "1"]


def venv_args(options: FlashOptions) -> list[str]:
    return ["--venvs", options.venvs] if options.venvs else []


def preflight_problems(meta: dict[str, Any], facts: dict[str, Any], *, size_mb: float, init: str) -> list[str]:
    """Why this bundle cannot go on this device (empty when it can)."""
    problems = []
    init = facts.get("init") or init  # "auto" as the device resolved it
    missing = [f for f, ok in sorted((facts.get("device_files") or {}).items()) if not ok]
    if missing:
        problems.append(f"the release reads {', '.join(missing)} on the device (device: paths in its config), "
                        "which is not there: copy it there first")
    arch = ARCH_ALIASES.get(facts.get("architecture", ""), facts.get("architecture", ""))
    if arch != meta["architecture"]:
        problems.append(f"the bundle is for {meta['architecture']} ({meta['target']}) but the device is {arch or 'unknown'}")
    py = ".".join(str(facts.get("python", "")).split(".")[:2])
    if py not in meta["python"]:
        extra = " (its wheels are built for that Python only)" if meta.get("wheels") == "all" else ""
        if meta.get("system_opencv"):
            extra += f"; with the system OpenCV the venv is made from the device's own Python: bundle for --python {py}"
        problems.append(f"the device runs Python {py or 'unknown'} but the bundle's runtime serves Python "
                        f"{', '.join(meta['python'])}{extra}")
    profile = get_target(meta["target"])
    need_glibc = meta["glibc"] if meta.get("wheels") == "all" else profile.min_glibc.get(meta["format"])
    if need_glibc and facts.get("glibc") and _ver(facts["glibc"]) < _ver(need_glibc):
        problems.append(f"the device has glibc {facts['glibc']} but the {meta['format']} runtime wheels need glibc >= {need_glibc}")
    need_mb = int(size_mb * 3) + profile.min_free_mb
    if facts.get("free_mb", 0) < need_mb:
        problems.append(f"the device has {facts.get('free_mb')} MB free under the device root, needs {need_mb} MB")
    cv2 = facts.get("system_cv2") or {}
    if meta.get("system_opencv") and not cv2.get("ok"):
        python = facts.get("python_executable") or "the device's Python"
        err = cv2.get("error", "")
        problems.append(f"the bundle uses the device's system OpenCV but {python} has no cv2: apt install python3-opencv"
                        if not err or err.startswith("ModuleNotFoundError") else
                        f"the bundle uses the device's system OpenCV but {python} cannot import cv2 ({err})")
    if not facts.get("has_venv_module"):
        problems.append("the device's Python has no venv/ensurepip module (Debian/Ubuntu: apt install python3-venv)")
    if init == "systemd" and not facts.get("systemd"):
        problems.append("--init systemd but systemd is not running on the device (use --init none)")
    if init == "systemd" and not facts.get("root_user"):
        problems.append(f"--init systemd installs a unit and needs root on the device: {_root_hint(facts)}")
    return problems


def preflight_warnings(meta: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """What may not work on this device but does not stop the flash."""
    warnings = [f"camera device {d} is not present" for d, ok in sorted(facts.get("cameras", {}).items()) if not ok]
    cv2 = facts.get("system_cv2") or {}
    if meta.get("system_opencv") and cv2.get("ok") and not cv2.get("gstreamer"):
        warnings.append(f"the system cv2 {cv2.get('path')} ({cv2.get('version')}) is built without GStreamer: "
                        "gst: sources (CSI cameras) will not open")
    return warnings


def _root_hint(facts: dict[str, Any]) -> str:
    user = facts.get("user") or "the login user"
    hints = {
        "passwordless": f"{user} has passwordless sudo: add --sudo (or use --init none)",
        "password": f"add --sudo after allowing passwordless sudo for {user} (a sudoers.d entry), "
                    "log in as root, or use --init none",
        "missing": "sudo is not installed there: log in as root or use --init none",
    }
    return hints.get(facts.get("sudo"), "add --sudo, log in as root, or use --init none")


def _ver(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(v).split(".")[:2] if x.isdigit())


def flash_host(bundle: str | os.PathLike, host: HostSpec, *, ssh: SSHOptions | None = None,
               options: FlashOptions | None = None, meta: dict[str, Any] | None = None) -> FlashResult:
    """Deploy ``bundle`` to one device; never raises for device-side failures (see ``FlashResult``)."""
    options = options or FlashOptions()
    bundle = Path(bundle)
    meta = meta or read_release(bundle)
    root = host.device_root or options.device_root
    result = FlashResult(host=host.label, ok=False, status="failed", version=meta["version"])
    clock = _Clock(result.seconds)
    try:
        with Remote(host, ssh, sudo=uses_sudo(host, options)) as remote:
            common = agent_args(host, options)
            with clock("preflight"):
                facts = remote.agent(options.python, "preflight", *common, *preflight_args(meta), timeout=120)
            result.device = facts
            result.previous = result.running = facts.get("current")
            problems = preflight_problems(meta, facts, size_mb=bundle.stat().st_size / 2**20, init=options.init)
            if problems:
                result.status, result.reason = "refused", "; ".join(problems)
                return result
            result.warnings = preflight_warnings(meta, facts)  # reported once, by the caller (the CLI prints them)
            part = f"{root}/incoming/{meta['version']}.{secrets.token_hex(4)}.part"
            with clock("upload"):
                remote.upload(bundle, part, bwlimit_kbps=options.bwlimit_kbps)
            venvs = venv_args(options)
            with clock("install"):
                installed = remote.agent(options.python, "install", *common, *venvs, "--part", part,
                                         "--sha256", sha256_file(bundle), "--python", facts.get("python_executable") or options.python)
            result.install = installed
            if not installed.get("ok"):
                result.reason = f"install failed: {installed.get('reason')}"
                return result
            with clock("activate"):
                act = remote.agent(options.python, "activate", *common, *activate_args(host, options, meta["version"]))
            result.health = act
            if act.get("ok"):
                result.ok, result.status, result.running = True, "deployed", meta["version"]
                with clock("prune"):
                    remote.agent(options.python, "prune", *common, *venvs, "--keep", str(options.keep))
                return result
            result.reason = f"release {meta['version']} failed its health check: {act.get('reason')}"
            result.running = None
            with clock("rollback"):  # the newest release not marked failed; the service stops when none is healthy
                back = remote.agent(options.python, "rollback", *common, "--timeout", str(options.health_timeout),
                                    "--restart-sec", "1")
            result.rollback = back
            if back.get("ok"):
                result.status, result.running = "rolled-back", back.get("version")
                result.reason += f"; rolled back to {back.get('version')}, which is healthy"
            else:
                result.reason += f"; {back.get('reason')}"
            return result
    except SudoRefused as e:
        result.status, result.reason = "refused", str(e)
        return result
    except DeployError as e:
        result.reason = str(e)
        return result


class _Clock:
    def __init__(self, into: dict[str, float]):
        self.into = into

    def __call__(self, step: str):
        clock = self

        class _Step:
            def __enter__(self):
                self.t = time.monotonic()

            def __exit__(self, *exc):
                clock.into[step] = round(time.monotonic() - self.t, 3)
                return False

        return _Step()
