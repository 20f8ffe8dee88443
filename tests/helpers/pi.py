"""An emulated Raspberry Pi for the device tests: arm64 Debian under QEMU user-mode, reached over SSH.

    with EmulatedPi(tmp_path) as pi:
        pi.root            # the device's / as seen from this machine (an overlay on the cached root)
        pi.address, pi.known_hosts, pi.user_key
        pi.host("pi")      # "pi@10.213.N.2": a normal user with passwordless sudo; pi.host("root")
        pi.run("uname -m") # a command on the device over SSH -> CompletedProcess

Each device has a network of its own, like a real one: a network namespace joined to this machine
by a veth pair on a private /30 (``10.213.N.1`` here, ``10.213.N.2`` the Pi, sshd on its port 22),
so two Pis can run the same config on the same port and a health check reaches only its own
device's runtime. Nothing listens outside this machine.

The root file system (Debian ``bookworm`` arm64: Python 3.11.2, glibc 2.36, OpenSSH, sudo) is made
once by ``debootstrap`` from the Debian archive apt already uses and cached outside the repository
(``$EDGESHIP_TEST_CACHE`` or ``~/.cache/edgeship-tests``); every :class:`EmulatedPi` runs on a
fresh overlay of it, so a test never sees what another session left behind. arm64 programs run
through a binfmt_misc entry of this module's own (``edgeship-aarch64``: qemu-aarch64-static with
the ``C`` flag, so ``sudo`` works inside, and ``F``, so the chroot needs no copy of QEMU).

Two traps of QEMU 7.2 user-mode, both handled here: the guest sees the host's x86
``/proc/cpuinfo`` (LiteRT's CPU detection segfaults on it), so a Cortex-A76 ``cpuinfo`` is
bind-mounted over the guest's; and QEMU's default ``max`` CPU (with SME) makes LiteRT's int8
kernels return wrong numbers, so ``QEMU_CPU=cortex-a76`` (the Pi 5's core) is set for sshd, every
SSH session (``SetEnv``) and kept by sudo (``env_keep``).

Needs root (mounts, chroot), Debian's ``qemu-user-static`` and ``debootstrap``
(``scripts/system-deps.sh`` installs them) and the Debian archive (only to build the cache).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .sshd import keygen

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "openssh-server", "sudo", "ca-certificates")
QEMU = "/usr/bin/qemu-aarch64-static"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "edgeship-aarch64"
# the ELF header of an aarch64 executable, and which of its bytes to compare
ELF_MAGIC = r"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
ELF_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
QEMU_CPU = "cortex-a76"
SUBNET = "10.213"  # 10.213.N.0/30 per device: .1 this machine, .2 the Pi
PI_USER, PI_UID = "pi", 1000


def cache_root() -> Path:
    return Path(os.environ.get("EDGESHIP_TEST_CACHE") or Path.home() / ".cache" / "edgeship-tests")


def why_unavailable() -> str | None:
    """None when an emulated Pi can run here, else the reason (for ``pytest.skip``)."""
    if os.geteuid() != 0:
        return "the emulated Raspberry Pi needs root (mounts and chroot)"
    for tool in (QEMU, "/usr/sbin/debootstrap", "/usr/sbin/sshd", "/usr/sbin/ip"):
        if not os.path.exists(tool):
            return (f"{tool} is missing (scripts/system-deps.sh installs qemu-user-static, debootstrap, openssh-server, "
                    "iproute2)")
    try:
        ensure_binfmt()
    except (OSError, subprocess.CalledProcessError) as e:
        return f"binfmt_misc is not available here ({e})"
    return None


def ensure_binfmt() -> None:
    """Mount binfmt_misc when needed and register this module's aarch64 entry (flags O, C, F)."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True, capture_output=True)
    entry = BINFMT / BINFMT_NAME
    if entry.exists():
        if "flags: OCF" in entry.read_text() and QEMU in entry.read_text():
            return
        entry.write_text("-1")  # someone else's entry under our name: replace it
    rule = f":{BINFMT_NAME}:M::{ELF_MAGIC}:{ELF_MASK}:{QEMU}:OCF"
    with open(BINFMT / "register", "w") as f:  # the kernel reads the \\x escapes itself
        f.write(rule)


def debian_mirror() -> str:
    """The Debian archive apt already uses here (the only network the machine has)."""
    for src in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = src.read_text()
        except OSError:
            continue
        for word in text.split():
            if word.startswith("http") and word.rstrip("/").endswith("/debian"):
                return word.rstrip("/")
    return "http://deb.debian.org/debian"


def rootfs(suite: str = SUITE, log=print) -> Path:
    """The cached arm64 root file system of ``suite``, built by debootstrap when missing (~3 min)."""
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"rootfs-{suite}-arm64"
    marker = final / ".edgeship-rootfs"
    wanted = ",".join(PACKAGES)
    if marker.is_file() and marker.read_text().strip() == wanted:
        return final
    with open(cache / f".rootfs-{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if marker.is_file() and marker.read_text().strip() == wanted:
            return final
        ensure_binfmt()
        tmp = cache / f".rootfs-{suite}-arm64.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"building the emulated Pi's root file system ({suite} arm64) with debootstrap into {final}")
        t0 = time.monotonic()
        proc = subprocess.run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={wanted}", suite, str(tmp),
                               debian_mirror()], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-10:]
            shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("debootstrap failed: " + " | ".join(tail))
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (tmp / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        (tmp / ".edgeship-rootfs").write_text(wanted + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        log(f"root file system ready in {time.monotonic() - t0:.0f} s")
    return final


def cortex_a76_cpuinfo(cpus: int) -> str:
    block = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
             "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\n"
             "CPU part\t: 0xd0b\nCPU revision\t: 1\n\n")
    return "".join(block.format(n=n) for n in range(cpus)) + "Model\t\t: Raspberry Pi 5 Model B Rev 1.0 (emulated)\n"


class EmulatedPi:
    """A Raspberry Pi 5 as SSH sees it: arm64 bookworm under QEMU, its own network, sshd on port 22, users root and pi."""

    def __init__(self, workdir: Path, *, suite: str = SUITE, user_key: Path | None = None) -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.suite = suite
        self.root = self.dir / "root"
        self.port = 22
        self.net: int | None = None  # N of 10.213.N.0/30
        self.user_key = user_key or keygen(self.dir / "id_ed25519", "user")
        self.known_hosts = self.dir / "known_hosts"
        self.proc: subprocess.Popen | None = None
        self._mounts: list[Path] = []

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "EmulatedPi":
        lower = rootfs(self.suite)
        ensure_binfmt()
        upper, work = self.dir / "upper", self.dir / "work"
        for d in (upper, work, self.root):
            d.mkdir(exist_ok=True)
        self._mount(["-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}"], self.root)
        self._mount(["-t", "proc", "proc"], self.root / "proc")
        cpuinfo = self.dir / "cpuinfo"
        cpuinfo.write_text(cortex_a76_cpuinfo(os.cpu_count() or 2))
        self._mount(["--bind", str(cpuinfo)], self.root / "proc" / "cpuinfo")
        self._mount(["--bind", "/dev"], self.root / "dev")
        self._mount(["--bind", "/sys"], self.root / "sys")
        self._mount(["-t", "tmpfs", "-o", "mode=755", "tmpfs"], self.root / "run")
        self._network()
        self._configure()
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU, "LANG": "C.UTF-8"}
        self.log = open(self.dir / "sshd.log", "wb")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, "chroot", str(self.root), "/usr/sbin/sshd", "-D", "-e",
                                      "-f", "/etc/ssh/sshd_config_edgeship"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self._wait_ssh()
        return self

    def stop(self) -> None:
        self._kill_inside()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        for m in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        self._mounts.clear()
        if self.net is not None:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)  # takes its veth pair along
            self.net = None

    def __enter__(self) -> "EmulatedPi":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- use ---------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.net}.2"

    @property
    def netns(self) -> str:
        return f"edgeship-pi{self.net}"

    def host(self, user: str = PI_USER) -> str:
        return f"{user}@{self.address}"

    def ssh_argv(self, user: str = "root") -> list[str]:
        return ["ssh", "-T", "-p", str(self.port), "-i", str(self.user_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                "-o", "StrictHostKeyChecking=yes", f"{user}@{self.address}"]

    def http_get(self, url: str, timeout: float = 30) -> str:
        """GET a URL on the device (its own 127.0.0.1) through its Python; the body as text."""
        code = f"import urllib.request as u; print(u.urlopen({url!r}, timeout=10).read().decode())"
        return self.run(f"python3 -c {code!r}", timeout=timeout).stdout

    def run(self, command: str, *, user: str = "root", timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        """``command`` in a shell on the device over SSH (as ``user``)."""
        proc = subprocess.run([*self.ssh_argv(user), command], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"on the emulated Pi, `{command}` exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return proc

    def path(self, device_path: str) -> Path:
        """A path on the device as seen from this machine."""
        return self.root / device_path.lstrip("/")

    # ---- internals ---------------------------------------------------------------------------
    def _mount(self, args: list[str], where: Path) -> None:
        subprocess.run(["mount", *args, str(where)], check=True, capture_output=True)
        self._mounts.append(where)

    def _network(self) -> None:
        """A network namespace for the device, joined to this machine by a veth pair on 10.213.N.0/30."""
        cache = cache_root()
        cache.mkdir(parents=True, exist_ok=True)
        with open(cache / ".netns.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = set(re.findall(rf"{re.escape(SUBNET)}\.(\d+)\.", subprocess.run(["ip", "-o", "addr"], capture_output=True,
                                                                                  text=True).stdout))
            names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            self.net = next(n for n in range(1, 250) if str(n) not in used and f"edgeship-pi{n} " not in names + " ")
            host_if, pi_if = f"espi{self.net}h", f"espi{self.net}p"
            for argv in (["ip", "netns", "add", self.netns],
                         ["ip", "link", "add", host_if, "type", "veth", "peer", "name", pi_if],
                         ["ip", "link", "set", pi_if, "netns", self.netns],
                         ["ip", "addr", "add", f"{SUBNET}.{self.net}.1/30", "dev", host_if],
                         ["ip", "link", "set", host_if, "up"],
                         ["ip", "-n", self.netns, "addr", "add", f"{self.address}/30", "dev", pi_if],
                         ["ip", "-n", self.netns, "link", "set", pi_if, "up"],
                         ["ip", "-n", self.netns, "link", "set", "lo", "up"]):
                subprocess.run(argv, check=True, capture_output=True)

    def _chroot(self, *argv: str) -> None:
        subprocess.run(["chroot", str(self.root), *argv], check=True, capture_output=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "QEMU_CPU": QEMU_CPU})

    def _configure(self) -> None:
        r = self.root
        host_key = r / "etc/ssh/ssh_host_ed25519_key"
        for old in (r / "etc/ssh").glob("ssh_host_*"):
            old.unlink()
        keygen(host_key, "emulated-pi")
        host_pub = Path(str(host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"{self.address} {host_pub[0]} {host_pub[1]}\n")
        (r / "etc/ssh/sshd_config_edgeship").write_text("\n".join([
            f"Port {self.port}", f"ListenAddress {self.address}", "HostKey /etc/ssh/ssh_host_ed25519_key",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "UsePAM no", "MaxStartups 50", "MaxSessions 50", "LogLevel ERROR",
            f"SetEnv QEMU_CPU={QEMU_CPU}", "PidFile /run/sshd.pid", "",
        ]))
        (r / "run/sshd").mkdir(mode=0o755, exist_ok=True)
        pub = Path(str(self.user_key) + ".pub").read_text()
        if not (r / "home" / PI_USER).exists():
            self._chroot("useradd", "--create-home", "--uid", str(PI_UID), "--shell", "/bin/bash", PI_USER)
            self._chroot("usermod", "-p", "*", PI_USER)  # no password, but not locked (sshd refuses locked accounts)
        for home, uid in ((r / "root", 0), (r / "home" / PI_USER, PI_UID)):
            ssh = home / ".ssh"
            ssh.mkdir(mode=0o700, exist_ok=True)
            (ssh / "authorized_keys").write_text(pub)
            (ssh / "authorized_keys").chmod(0o600)
            for p in (ssh, ssh / "authorized_keys"):
                os.chown(p, uid, uid)
        sudoers = r / "etc/sudoers.d/010_pi-nopasswd"
        sudoers.write_text(f"{PI_USER} ALL=(ALL) NOPASSWD: ALL\nDefaults env_keep += \"QEMU_CPU\"\n")
        sudoers.chmod(0o440)

    def _wait_ssh(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd in the emulated Pi exited {self.proc.returncode}: {(self.dir / 'sshd.log').read_text()}")
            proc = subprocess.run([*self.ssh_argv(), "true"], capture_output=True, text=True, timeout=60)
            if proc.returncode == 0:
                return
            last = proc.stderr.strip()
            time.sleep(0.5)
        raise RuntimeError(f"the emulated Pi's sshd did not answer within {timeout:g} s: {last}")

    def _kill_inside(self) -> None:
        """Every process whose root is this device's (the runtime, supervisors, sshd sessions)."""
        real = os.path.realpath(self.root)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            victims = []
            for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/root") == real:
                        victims.append(pid)
            for pid in victims:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            if not victims:
                return
            time.sleep(1.0)
