"""A real OpenSSH server on 127.0.0.1 for the flash tests (Debian's openssh-server).

    with SSHServer(tmp_path) as srv:
        srv.port, srv.user_key, srv.known_hosts, srv.host_spec   # USER@127.0.0.1:PORT

Generated host and user keys, AuthorizedKeysFile in the temp dir, StrictModes off, started as a
non-daemon child (``sshd -D -e``) and killed by the context manager.

``SSHServer(dir, user="alice")`` logs in as another (existing) account: sshd reads the
authorized_keys file as that user, so ``dir`` and its parents must be traversable by it (the file
itself is made world-readable: it holds a public key).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def available() -> bool:
    return os.path.exists(SSHD) and shutil.which("ssh-keygen") is not None and shutil.which("ssh") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str = "edgeship-test") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path


class SSHServer:
    """sshd on 127.0.0.1:<free port> with its own host key; the user key is authorised for the current user."""

    def __init__(self, workdir: Path, *, user_key: Path | None = None, user: str | None = None):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.user = user or getpass.getuser()
        self.port = free_port()
        self.host_key = keygen(self.dir / "ssh_host_ed25519_key", "host")
        self.user_key = user_key or keygen(self.dir / "id_ed25519", "user")
        (self.dir / "authorized_keys").write_text(Path(str(self.user_key) + ".pub").read_text())
        (self.dir / "authorized_keys").chmod(0o644)
        host_pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = self.dir / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "UsePAM no",
            "MaxStartups 50", "MaxSessions 50", "LogLevel ERROR", "AcceptEnv none",
            "Subsystem sftp internal-sftp", "",
        ]))
        self.proc: subprocess.Popen | None = None

    @property
    def host_spec(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def start(self) -> "SSHServer":
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation dir Debian's sshd insists on
        self.log = open(self.dir / "sshd.log", "wb")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {(self.dir / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "SSHServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
