"""SSH to a device with the system OpenSSH client: key authentication only, host keys checked.

Every call goes through one multiplexed connection (ControlMaster), so the dozen steps of a
flash cost one handshake. Remote paths are always ``shlex.quote``d into the command line.

With ``sudo=True`` (a login user that is not root) the device agent runs as ``sudo -n PYTHON -``
and uploads as ``sudo -n sh -c ...``; ``-n`` means sudo never prompts: a sudo that wants a
password is refused with :class:`SudoRefused` before anything runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import DeployError, InputError

log = logging.getLogger(__name__)
AGENT = Path(__file__).with_name("agent.py")
_HOST_RE = re.compile(r"^(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@(?P<host>[A-Za-z0-9][A-Za-z0-9.-]*|\[[0-9A-Fa-f:.]+\])(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class HostSpec:
    """``USER@HOST[:PORT]`` plus per-host overrides from a hosts file."""

    user: str
    host: str
    port: int | None = None
    device_root: str | None = None
    http_port: int | None = None
    name: str | None = None  # the inventory's name for it (an alias, or USER@HOST[:PORT])
    groups: tuple[str, ...] = ()  # inventory groups it belongs to (--limit GROUP)
    env: tuple[str, ...] = ()  # KEY=VALUE for the service's environment (edgeship_env), over --env
    vars: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # every inventory variable

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host.strip('[]')}"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port else "")


def parse_host(text: str) -> HostSpec:
    """Parse ``USER@HOST[:PORT]`` (a user is required: no guessing who logs in)."""
    m = _HOST_RE.match(text.strip())
    if not m:
        raise InputError(f"host {text!r} is not USER@HOST or USER@HOST:PORT")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 1 <= port <= 65535:
        raise InputError(f"host {text!r}: port must be 1-65535, got {port}")
    return HostSpec(user=m["user"], host=m["host"], port=port)


def port_value(value: str, where: str) -> int:
    """A TCP port 1-65535 (one-line error naming ``where``)."""
    if not value.strip().isdigit() or not 1 <= int(value) <= 65535:
        raise InputError(f"{where}: expected a port 1-65535, got {value!r}")
    return int(value)


def device_root_value(value: str, where: str) -> str:
    """An absolute folder on the device, one line, no '..'."""
    if not value.startswith("/") or ".." in value.split("/") or any(c in value for c in "\n\r\0"):
        raise InputError(f"{where}: expected an absolute folder on the device (like /opt/edgeship), got {value!r}")
    return value


class SudoRefused(DeployError):
    """``--sudo`` was asked for but sudo on the device cannot run without a password (or is missing)."""


# exit codes of the sudo guard (the agent itself exits 0, 2 or 3; Python crashes exit 1)
_SUDO_MISSING, _SUDO_REFUSED = 96, 97
SUDO_GUARD = (f"command -v sudo >/dev/null 2>&1 || exit {_SUDO_MISSING}; "
              f"sudo -n true </dev/null >/dev/null || exit {_SUDO_REFUSED}; ")


@dataclass
class SSHOptions:
    """How to reach devices: identity, known_hosts and host-key policy, timeouts."""

    identity: str | None = None
    known_hosts: str | None = None
    accept_new_host_key: bool = False
    connect_timeout: float = 10.0
    port: int | None = None

    def __post_init__(self) -> None:
        for flag, value in (("--identity", self.identity), ("--known-hosts", self.known_hosts)):
            if value is not None and (not str(value).strip() or any(c in str(value) for c in "\n\r\0")):
                raise InputError(f"{flag} must be one file name on one line, got {value!r}")


class Remote:
    """One device over SSH. Use as a context manager (closes the shared connection)."""

    def __init__(self, host: HostSpec, options: SSHOptions | None = None, *, sudo: bool = False):
        if shutil.which("ssh") is None:
            raise DeployError("the OpenSSH client (ssh) is not installed on this machine")
        self.host = host
        self.options = options or SSHOptions()
        self.sudo = sudo
        self._control_dir = tempfile.mkdtemp(prefix="edgeship-ssh-")

    # ---- command lines -----------------------------------------------------------------------
    def base_argv(self) -> list[str]:
        o = self.options
        port = self.host.port or o.port
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-o", "PasswordAuthentication=no",
                "-o", "KbdInteractiveAuthentication=no", "-o", "PreferredAuthentications=publickey",
                "-o", f"StrictHostKeyChecking={'accept-new' if o.accept_new_host_key else 'yes'}",
                "-o", f"ConnectTimeout={int(o.connect_timeout)}", "-o", "ServerAliveInterval=15",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self._control_dir}/c", "-o", "ControlPersist=120"]
        if o.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={o.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if o.identity:
            argv += ["-i", o.identity, "-o", "IdentitiesOnly=yes"]
        if port:
            argv += ["-p", str(port)]
        return argv

    def argv(self, command: str) -> list[str]:
        return [*self.base_argv(), "--", self.host.destination, command]

    def privileged(self, command: str) -> str:
        """``command`` (a POSIX shell line) as it runs on the device: under ``sudo -n sh -c`` with ``sudo``."""
        return f"{SUDO_GUARD}exec sudo -n -- sh -c {shlex.quote(command)}" if self.sudo else command

    def _raise_for_sudo(self, proc: subprocess.CompletedProcess) -> None:
        if not self.sudo or proc.returncode not in (_SUDO_MISSING, _SUDO_REFUSED):
            return
        if proc.returncode == _SUDO_MISSING:
            raise SudoRefused(f"sudo is not installed on {self.host.label}: install it (apt install sudo) "
                              f"or log in as root")
        err = _text(proc.stderr)
        if "tty" in err:
            raise SudoRefused(f"sudo on {self.host.label} requires a terminal (Defaults requiretty): allow "
                              f"`Defaults:{self.host.user} !requiretty` in a sudoers.d entry or log in as root")
        raise SudoRefused(f"sudo on {self.host.label} asks for a password: allow passwordless sudo for this user "
                          f"(e.g. a sudoers.d entry for the edgeship commands) or log in as root")

    # ---- running -----------------------------------------------------------------------------
    def run(self, command: str, *, input: bytes | None = None, timeout: float | None = 600, check: bool = True) -> subprocess.CompletedProcess:
        """Run a shell command on the device; raise DeployError on SSH failures (and non-zero exits with ``check``)."""
        log.debug("ssh %s: %s", self.host.label, command)
        try:
            proc = subprocess.run(self.argv(command), input=input if input is not None else b"", stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise DeployError(f"{self.host.label}: `{command[:80]}` did not finish within {timeout:g}s") from e
        self._raise_for_ssh(proc)
        if check and proc.returncode != 0:
            raise DeployError(f"{self.host.label}: `{command[:80]}` exited {proc.returncode}: {_text(proc.stderr)}")
        return proc

    def _raise_for_ssh(self, proc: subprocess.CompletedProcess) -> None:
        if proc.returncode != 255:
            return
        err = _text(proc.stderr)
        if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err:
            where = self.options.known_hosts or "~/.ssh/known_hosts"
            raise DeployError(f"{self.host.label}: host key is unknown or changed (checked against {where}); "
                              "verify the fingerprint and add it with ssh-keyscan, or pass --accept-new-host-key "
                              f"for a first contact. ssh said: {err}")
        if "Permission denied" in err:
            raise DeployError(f"{self.host.label}: key authentication refused (passwords are never used): {err}")
        raise DeployError(f"{self.host.label}: ssh failed: {err or 'exit 255'}")

    def agent_command(self, python: str, command: str, *args: str) -> str:
        """The shell line that runs the device agent (read from stdin: nothing is installed first)."""
        remote = " ".join([shlex.quote(python), "-", shlex.quote(command), *(shlex.quote(a) for a in args)])
        if self.sudo:  # python reads the agent from stdin: no `sh -c` in between
            remote = f"{SUDO_GUARD}exec sudo -n -- {remote}"
        return remote

    def agent(self, python: str, command: str, *args: str, timeout: float | None = 900) -> dict[str, Any]:
        """Run the device agent (streamed over stdin, nothing installed first) and return its JSON answer."""
        proc = self.run(self.agent_command(python, command, *args), input=AGENT.read_bytes(), timeout=timeout, check=False)
        self._raise_for_sudo(proc)
        lines = _text(proc.stdout).splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except json.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise DeployError(f"{self.host.label}: device agent `{command}` gave no answer (exit {proc.returncode}): "
                              f"{_text(proc.stderr) or _text(proc.stdout)}")
        return answer

    def agent_stream(self, python: str, command: str, *args: str, on_text: Callable[[str], None]) -> None:
        """Run an agent command that prints text as it goes (``logs --follow``), handing each piece to
        ``on_text`` until it ends or the caller is interrupted (Ctrl-C stops it quietly)."""
        proc = subprocess.Popen(self.argv(self.agent_command(python, command, *args)), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            proc.stdin.write(AGENT.read_bytes())
            proc.stdin.close()
            for chunk in iter(lambda: proc.stdout.read1(65536), b""):
                on_text(chunk.decode("utf-8", "replace"))
            err = proc.stderr.read()
            code = proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            return
        done = subprocess.CompletedProcess(proc.args, code, b"", err)
        self._raise_for_ssh(done)
        self._raise_for_sudo(done)

    def upload(self, local: str | os.PathLike, remote_path: str, *, bwlimit_kbps: float | None = None,
               on_progress: Callable[[int], None] | None = None, timeout: float = 3600) -> None:
        """Stream ``local`` into ``remote_path`` (``cat >``), optionally paced to ``bwlimit_kbps`` KiB/s.

        The folder above the upload's folder (the device root) is made with the default umask, so
        the service user can reach ``current``; the upload folder itself is private (0700).
        """
        parent = os.path.dirname(remote_path) or "."
        command = (f"mkdir -p {shlex.quote(os.path.dirname(parent) or '.')} && umask 077 && "
                   f"mkdir -p {shlex.quote(parent)} && cat > {shlex.quote(remote_path)}")
        proc = subprocess.Popen(self.argv(self.privileged(command)), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        start, sent = time.monotonic(), 0
        try:
            with open(local, "rb") as f:
                for block in iter(lambda: f.read(1 << 16), b""):
                    proc.stdin.write(block)
                    sent += len(block)
                    if on_progress:
                        on_progress(len(block))
                    if bwlimit_kbps:
                        ahead = sent / (bwlimit_kbps * 1024) - (time.monotonic() - start)
                        if ahead > 0:
                            time.sleep(ahead)
            proc.stdin.close()
            err = proc.stderr.read()
            code = proc.wait(timeout=timeout)
        except (BrokenPipeError, OSError) as e:
            proc.kill()
            err, code = proc.stderr.read(), proc.wait()
            self._raise_for_ssh(subprocess.CompletedProcess(proc.args, code, b"", err))
            self._raise_for_sudo(subprocess.CompletedProcess(proc.args, code, b"", err))
            raise DeployError(f"{self.host.label}: upload to {remote_path} broke off after {sent} bytes: {e}: {_text(err)}") from e
        self._raise_for_ssh(subprocess.CompletedProcess(proc.args, code, b"", err))
        self._raise_for_sudo(subprocess.CompletedProcess(proc.args, code, b"", err))
        if code != 0:
            raise DeployError(f"{self.host.label}: upload to {remote_path} failed (exit {code}): {_text(err)}")

    def close(self) -> None:
        if os.path.exists(os.path.join(self._control_dir, "c")):
            subprocess.run([*self.base_argv(), "-O", "exit", self.host.destination], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10)
        shutil.rmtree(self._control_dir, ignore_errors=True)

    def __enter__(self) -> "Remote":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(b: bytes | None) -> str:
    return (b or b"").decode("utf-8", "replace").strip()
