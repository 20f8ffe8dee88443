"""The device side of ``edgeship flash``: a stdlib-only script (Python >= 3.9) run on the device.

The workstation streams this file over SSH (``ssh HOST python3 - COMMAND ...``) so nothing has to
be installed on the device first; a copy also travels in every bundle, where the ``--init none``
supervisor runs from. Each command prints one JSON object on stdout and exits 0 on success, 3 when
the device answered but the step failed (the JSON says why), 2 on usage errors.

Layout under DEVICE_ROOT::

    releases/<version>/     verified, complete releases (model/, deploy.yaml, run.sh, wheels/, ...)
    releases/.incoming-*    extraction in progress (never a release; removed by the next install)
    incoming/*.part         uploads in progress
    venvs/<hash>/           runtime venvs, shared by releases with identical requirements and wheels
                            (a release with ``system_opencv`` gets a ``--system-site-packages`` venv
                            that sees the system Python's cv2; never shared with plain venvs)
    current -> releases/V   switched atomically (symlink + rename); previous -> releases/U
    history.json            activation history (newest last), drives rollback and pruning
    run/ logs/ data/        pid and state files, logs, the runtime's working directory

Run as root (a root login, or ``sudo -n`` with ``flash --sudo``) the code (releases, venvs,
current) stays root-owned and the runtime drops privileges: systemd runs it as the unit's
``User=`` (created here as a system user when missing; data/ and logs/ are given to it), and the
``--init none`` supervisor runs it as ``--run-as USER`` (the login user), who then owns run/,
logs/ and data/.
"""

from __future__ import annotations

import argparse
import grp
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import urllib.request

VENV_MARKER = ".edgeship-complete"
# a release name: one path component, never "." or ".."; the workstation's bundle checks the same rule
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,80}$")
# files of a release that may hold secrets (MQTT password, webhook headers, dashboard token)
SECRET_FILES = ("deploy.yaml",)
FAILED_MARKER = ".failed"  # written into a release whose health check failed; rollback skips it


# ---- small helpers ----------------------------------------------------------------------------
class StepFailed(Exception):
    """A device step failed; the message goes back to the workstation."""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_SMALL_FILE = 1 << 20  # pid, state and history files: anything bigger is not ours


def open_plain(path: str) -> int:
    """A read-only descriptor for ``path`` if it is a plain file, never following a symlink and never
    blocking on a FIFO or device: the service account owns run/ and logs/ and may plant either."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a plain file")
    return fd


def read_small(path: str, limit: int = MAX_SMALL_FILE) -> bytes:
    """At most ``limit`` bytes of a plain file (see :func:`open_plain`); OSError otherwise."""
    fd = open_plain(path)
    try:
        return os.read(fd, limit)
    finally:
        os.close(fd)


def read_json(path: str, default=None):
    try:
        return json.loads(read_small(path).decode("utf-8"))
    except (OSError, ValueError):
        return default


def write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def valid_version(version) -> str:
    """``version`` if it is a safe release name (a single path component), else StepFailed."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise StepFailed(f"release version {version!r} is not valid: expected letters, digits and . _ + - "
                         "(at most 81 characters, starting with a letter or digit)")
    return version


def open_log_safely(path: str, uid=None, gid=None) -> int:
    """Open (create) a log file for appending without following a symlink planted in its place nor
    blocking on a FIFO, and hand it to uid:gid through the descriptor (never by path): the folder
    belongs to the service account, which must not be able to point root at another file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o640)
    except OSError as e:
        raise StepFailed(f"cannot open the log file {path} ({e.strerror or e}): a link, FIFO or device was put in "
                         "its place? remove it and start again") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise StepFailed(f"log file {path} is not a plain file of its own (a link?): remove it and start again")
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    if uid is not None and os.geteuid() == 0:
        os.fchown(fd, uid, gid)
    return fd


def protect_secrets(release_dir: str, gid=None) -> None:
    """Config files with secrets readable by root and the service account's group only (0640), or by their owner (0600)."""
    for name in SECRET_FILES:
        path = os.path.join(release_dir, name)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        if gid is not None and os.geteuid() == 0:
            os.chown(path, 0, gid)
            os.chmod(path, 0o640)
        else:
            os.chmod(path, 0o600)


def pid_alive(pid) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(path: str):
    try:
        return int(read_small(path, 64).decode("ascii", "replace").strip() or 0) or None
    except (OSError, ValueError):
        return None


def paths(root: str) -> dict:
    return {k: os.path.join(root, k) for k in ("releases", "incoming", "venvs", "run", "logs", "data")}


def current_version(root: str, link: str = "current"):
    target = os.path.join(root, link)
    if not os.path.islink(target):
        return None
    return os.path.basename(os.readlink(target).rstrip("/"))


def tail(path: str, lines: int) -> str:
    """The last ``lines`` lines of a plain log file (a link, FIFO or device planted there reads as empty)."""
    try:
        fd = open_plain(path)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - 200 * lines - 4096)
        os.lseek(fd, start, os.SEEK_SET)
        data = os.read(fd, size - start).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return "\n".join(data.splitlines()[-lines:])


# ---- preflight --------------------------------------------------------------------------------
def glibc_version() -> str:
    import platform

    lib, ver = platform.libc_ver()
    if lib == "glibc" and ver:
        return ver
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
    except (ValueError, OSError, AttributeError, IndexError):
        return ""


def os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            kv = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        return kv.get("PRETTY_NAME", "").strip('"')
    except OSError:
        return ""


def free_mb(path: str) -> int:
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    st = os.statvfs(p)
    return int(st.f_bavail * st.f_frsize // (1 << 20))


def sudo_ability() -> str:
    """root (logged in as root), passwordless (``sudo -n`` works, or we run under it), password, missing."""
    if os.geteuid() == 0:
        return "passwordless" if os.environ.get("SUDO_USER") else "root"
    if not shutil.which("sudo"):
        return "missing"
    proc = subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return "passwordless" if proc.returncode == 0 else "password"


def login_user() -> str:
    try:
        return os.environ.get("SUDO_USER") or pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


CV2_PROBE = r"""
import json, sys
out = {"ok": False, "python": sys.executable, "numpy": None}
try:
    import numpy
    out["numpy"] = numpy.__version__
except Exception as e:
    pass
try:
    import cv2
    info = cv2.getBuildInformation()
    out.update(ok=True, path=cv2.__file__, version=cv2.__version__,
               gstreamer=any("GStreamer" in ln and "YES" in ln for ln in info.splitlines()))
except Exception as e:
    out["error"] = (type(e).__name__ + ": " + str(e)).strip().splitlines()[0][:300]
print(json.dumps(out))
"""


def probe_cv2(python: str) -> dict:
    """Which cv2 ``python`` imports (path, version, GStreamer in its build) and its NumPy, in a child
    process (a cv2 built for another NumPy can abort the interpreter)."""
    try:
        proc = subprocess.run([python, "-I", "-c", CV2_PROBE], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"ok": False, "python": python, "error": f"{type(e).__name__}: {e}"}
    try:
        return json.loads(proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, IndexError):
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return {"ok": False, "python": python, "error": f"exit {proc.returncode}: {err[-1] if err else 'no output'}"}


def cmd_preflight(a) -> dict:
    import platform

    facts = {
        "ok": True,
        "architecture": platform.machine(),
        "os": os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "glibc": glibc_version(),
        "free_mb": free_mb(a.root),
        "cameras": {d: os.path.exists(d) for d in a.device},
        "systemd": os.path.isdir("/run/systemd/system"),
        "root_user": os.geteuid() == 0,
        "user": login_user(),
        "sudo": sudo_ability(),
        "current": current_version(a.root),
        "has_venv_module": _has_module("venv") and _has_module("ensurepip"),
        "init": a.init,
        "device_files": {f: os.path.isfile(device_file(a.root, f)) for f in a.need_file},
    }
    if a.system_opencv:  # the bundle's venv will see this Python's cv2
        facts["system_cv2"] = probe_cv2(sys.executable)
    return facts


def device_file(root: str, path: str) -> str:
    """A ``device:`` path of a deploy config: absolute, or relative to DEVICE_ROOT/data."""
    if os.path.isabs(path):
        return path
    parts = [p for p in os.path.normpath(path).split(os.sep) if p not in ("", ".")]
    while parts and parts[0] == "..":
        parts.pop(0)
    return os.path.join(root, "data", *parts)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ---- install ----------------------------------------------------------------------------------
def safe_members(tar: tarfile.TarFile):
    """The bundle's members as they are extracted: plain relative files and folders only, owned by
    root (when root extracts) with no setuid/setgid/sticky bit and no group or world write, whatever
    the tar headers say (SHA256SUMS covers contents, not headers)."""
    for m in tar.getmembers():
        name = m.name
        if name.startswith("/") or ".." in name.split("/") or not (m.isfile() or m.isdir()):
            raise StepFailed(f"bundle member {name!r} is not a plain relative file: refusing to extract")
        m.uid = m.gid = 0
        m.uname = m.gname = "root"
        m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)
        yield m


def own_tree(top: str) -> None:
    """Make an extracted tree root-owned with safe modes (tarfile may keep the headers' owner when it
    cannot resolve the names, and umask does not strip setuid bits)."""
    if os.geteuid() != 0:
        return
    for base, dirs, files in os.walk(top):
        for name in [base, *(os.path.join(base, n) for n in dirs + files)]:
            st = os.lstat(name)
            if stat.S_ISLNK(st.st_mode):
                continue
            os.lchown(name, 0, 0)
            os.chmod(name, stat.S_IMODE(st.st_mode) & 0o755)


def verify_sums(release_dir: str) -> int:
    sums = os.path.join(release_dir, "SHA256SUMS")
    if not os.path.isfile(sums):
        raise StepFailed("bundle has no SHA256SUMS file")
    listed = {}
    with open(sums, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            digest, sep, name = line.rstrip("\n").partition("  ")
            if not sep or not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
                raise StepFailed(f"SHA256SUMS line {number} is malformed: expected '<64 hex digits>  <file name>'")
            listed[name] = digest
    present = set()
    for base, _dirs, files in os.walk(release_dir):
        for fn in files:
            rel = os.path.relpath(os.path.join(base, fn), release_dir)
            if rel != "SHA256SUMS":
                present.add(rel)
    if present != set(listed):
        raise StepFailed(f"files do not match SHA256SUMS: missing {sorted(set(listed) - present)}, "
                         f"unlisted {sorted(present - set(listed))}")
    for name, digest in sorted(listed.items()):
        got = sha256_of(os.path.join(release_dir, name))
        if got != digest:
            raise StepFailed(f"checksum mismatch for {name}: expected {digest}, got {got}")
    return len(listed)


def venv_key(release_dir: str, req_file: str, python: str, system_site: bool = False) -> str:
    h = hashlib.sha256()
    h.update(python.encode())
    if system_site:  # a venv that sees the system's packages is never shared with an isolated one
        h.update(b"\0--system-site-packages")
    with open(req_file, "rb") as f:
        h.update(f.read())
    wheels = os.path.join(release_dir, "wheels")
    for fn in sorted(os.listdir(wheels)) if os.path.isdir(wheels) else []:
        h.update(fn.encode() + sha256_of(os.path.join(wheels, fn)).encode())
    return h.hexdigest()[:16]


def numpy_constraint(system_numpy) -> str:
    """Keep the venv's NumPy at the major version the system cv2 was built against (``numpy<2``)."""
    try:
        return f"numpy<{int(str(system_numpy).split('.')[0]) + 1}\n"
    except ValueError:
        return ""


def check_system_cv2(venv: str, system: dict) -> dict:
    """The venv must import the system's cv2 (not a pip one a dependency pulled in, not one broken by
    the venv's NumPy)."""
    got = probe_cv2(os.path.join(venv, "bin", "python"))
    if not got.get("ok"):
        raise StepFailed(f"the venv cannot import the system cv2 {system.get('path')}: {got.get('error')} "
                         f"(system NumPy {system.get('numpy')}, venv NumPy {got.get('numpy')})")
    if os.path.realpath(got["path"]).startswith(os.path.realpath(venv) + os.sep):
        raise StepFailed(f"a pip OpenCV was installed into the venv ({got['path']}) and hides the system cv2 "
                         f"{system.get('path')}: a runtime requirement depends on opencv-python")
    return got


def build_venv(release_dir: str, venvs: str, python: str, offline: bool, system_site: bool = False) -> tuple:
    """The release's runtime venv (shared by releases with the same key): ``(path, reused, cv2)``,
    ``cv2`` being the system cv2 the venv imports when ``system_site``."""
    import platform

    py = ".".join(platform.python_version_tuple()[:2])
    req = os.path.join(release_dir, "requirements", f"py{py}.txt")
    if not os.path.isfile(req):
        raise StepFailed(f"bundle has no runtime requirements for Python {py} (requirements/py{py}.txt)")
    key = venv_key(release_dir, req, sys.version, system_site)
    system = probe_cv2(python) if system_site else {}
    if system_site and not system.get("ok"):
        raise StepFailed(f"the bundle uses the device's system OpenCV but {python} has no cv2: apt install python3-opencv "
                         f"({system.get('error')})")
    final = os.path.join(venvs, key)
    os.makedirs(venvs, exist_ok=True)
    import fcntl

    with open(final + ".lock", "w") as lock:  # releases flashed at once share one build
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isfile(os.path.join(final, VENV_MARKER)):
            return final, True, check_system_cv2(final, system) if system_site else None
        shutil.rmtree(final, ignore_errors=True)  # an interrupted build: start over
        run_checked([python, "-m", "venv", *(["--system-site-packages"] if system_site else []), final], "create the venv")
        wheels = os.path.join(release_dir, "wheels")
        own = sorted(f for f in os.listdir(wheels) if f.startswith("edgeship-") and f.endswith(".whl"))
        if not own:
            raise StepFailed("bundle has no edgeship wheel in wheels/")
        pip = [os.path.join(final, "bin", "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        pip += ["--no-index", "--find-links", wheels] if offline else ["--find-links", wheels]
        constraints = []
        if system_site and numpy_constraint(system.get("numpy")):
            path = os.path.join(final, "edgeship-constraints.txt")
            with open(path, "w") as f:
                f.write(numpy_constraint(system["numpy"]))
            constraints = ["-c", path]
        run_checked(pip + constraints + ["-r", req, os.path.join(wheels, own[-1])], "install the runtime")
        cv2 = check_system_cv2(final, system) if system_site else None
        with open(os.path.join(final, VENV_MARKER), "w") as f:
            f.write(key + "\n")
    return final, False, cv2


def run_checked(argv: list, what: str) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        out = proc.stdout.decode("utf-8", "replace").strip().splitlines()[-15:]
        raise StepFailed(f"could not {what} ({' '.join(argv[:4])} ... exit {proc.returncode}): " + " | ".join(out))


BUNDLE_SHA = ".bundle-sha256"  # the bundle a release came from (a version re-flashed with other content is refused)
VERIFIED = ".verified"  # written last: checksums verified and the runtime venv installed


def cmd_install(a) -> dict:
    p = paths(a.root)
    for d in (p["releases"], p["incoming"]):
        os.makedirs(d, exist_ok=True)
    got = sha256_of(a.part)
    if got != a.sha256:
        raise StepFailed(f"upload {a.part} is incomplete or corrupt: sha256 {got}, expected {a.sha256}")
    for stale in os.listdir(p["releases"]):
        if stale.startswith(".incoming-"):
            shutil.rmtree(os.path.join(p["releases"], stale), ignore_errors=True)
    tmp = os.path.join(p["releases"], f".incoming-{os.getpid()}")
    os.makedirs(tmp)
    try:
        with tarfile.open(a.part, "r:gz") as tar:
            members = list(safe_members(tar))
            tar.extractall(tmp, members=members, numeric_owner=True)
        own_tree(tmp)
        count = verify_sums(tmp)
        meta = read_json(os.path.join(tmp, "release.json"))
        if not meta or "version" not in meta:
            raise StepFailed("bundle has no release.json with a version")
        version = valid_version(meta["version"])
        if os.path.lexists(os.path.join(tmp, "venv")):
            raise StepFailed("bundle holds a 'venv' entry, where the device links the release's runtime: rebuild it "
                             "with `edgeship bundle`")
        final = os.path.join(p["releases"], version)
        installed = read_small(os.path.join(final, BUNDLE_SHA), 200).decode().strip() \
            if os.path.isfile(os.path.join(final, BUNDLE_SHA)) else None
        reused = installed is not None
        if reused:
            if installed != a.sha256:
                raise StepFailed(f"release {version} is already installed with different content (bundle sha256 "
                                 f"{installed[:12]}..., this one {a.sha256[:12]}...): give the new bundle a new --version")
        else:
            protect_secrets(tmp)
            with open(os.path.join(tmp, BUNDLE_SHA), "w") as f:
                f.write(a.sha256 + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.unlink(a.part)
    offline = meta.get("wheels") == "all"
    venv, venv_reused, cv2 = build_venv(final, a.venvs or p["venvs"], a.python, offline, bool(meta.get("system_opencv")))
    link = os.path.join(final, "venv")
    if os.path.islink(link) or os.path.exists(link):
        os.unlink(link)
    os.symlink(venv, link)
    with open(os.path.join(final, VERIFIED), "w") as f:
        f.write(a.sha256 + "\n")
    return {"ok": True, "version": version, "files_verified": count, "release_reused": reused,
            "venv": venv, "venv_reused": venv_reused, "cv2": cv2}


# ---- service control --------------------------------------------------------------------------
def service_env(root: str) -> dict:
    env = dict(os.environ, EDGESHIP_DEVICE_ROOT=root, EDGESHIP_PROGRESS="0", PYTHONUNBUFFERED="1")
    env_file = os.path.join(root, "device.env")
    if os.path.isfile(env_file):
        with open(env_file) as f:
            for line in f:
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.strip().split("=", 1)
                    env[k] = v
    return env


def health_release(body: str):
    """The release a /health answer names (None when it names none or is not JSON)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("release") if isinstance(data, dict) else None


def health_url(root: str, meta: dict) -> str:
    port = service_env(root).get("EDGESHIP_HTTP_PORT") or meta.get("http_port")
    return f"{meta.get('health_scheme', 'http')}://127.0.0.1:{port}{meta.get('health_path', '/health')}"


def account(user: str):
    """(passwd entry, supplementary gids) of an existing user on the device."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise StepFailed(f"user {user!r} does not exist on the device") from None
    return pw, os.getgrouplist(user, pw.pw_gid)


def give_dirs(dirs, uid: int, gid: int) -> None:
    """Create ``dirs`` and hand them (recursively, when not already) to uid:gid; only root can."""
    for d in dirs:
        os.makedirs(d, exist_ok=True)
        if os.geteuid() != 0:
            continue
        st = os.stat(d)
        if (st.st_uid, st.st_gid) == (uid, gid):
            continue
        for base, subdirs, files in os.walk(d):
            for name in [base, *(os.path.join(base, n) for n in subdirs + files)]:
                os.lchown(name, uid, gid)


def none_start(a) -> dict:
    root = a.root
    p = paths(root)
    env = service_env(root)
    drop = {}
    if a.run_as and os.geteuid() == 0 and a.run_as != "root":
        pw, groups = account(a.run_as)
        give_dirs((p["run"], p["logs"], p["data"]), pw.pw_uid, pw.pw_gid)
        drop = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": groups}
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    else:
        for d in (p["run"], p["logs"], p["data"]):
            os.makedirs(d, exist_ok=True)
    release = os.path.realpath(os.path.join(root, "current"))
    protect_secrets(release, drop.get("group"))
    argv = [sys.executable, os.path.join(release, "agent.py"), "supervise", "--root", root]
    log_fd = open_log_safely(os.path.join(p["logs"], "edgeship.log"), drop.get("user"), drop.get("group"))
    try:
        subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, cwd=p["data"],
                         start_new_session=True, close_fds=True, env=env, **drop)
    finally:
        os.close(log_fd)
    return {"run_as": a.run_as if drop else login_user()}


def is_supervisor(pid, root: str) -> bool:
    """Whether ``pid`` is this root's ``agent.py supervise`` leading its own process group.

    The pid file lives in run/, which the service account owns: root must not take its word for
    which process to signal."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            args = [x.decode("utf-8", "replace") for x in f.read().split(b"\0") if x]
        pgid = os.getpgid(int(pid))
    except (OSError, ValueError):
        return False
    if pgid != int(pid) or "supervise" not in args or not any(x.endswith("agent.py") for x in args):
        return False
    return "--root" in args and args.index("--root") + 1 < len(args) and args[args.index("--root") + 1] == root


def none_stop(root: str, timeout: float = 15.0) -> None:
    pidfile = os.path.join(root, "run", "supervisor.pid")
    pid = read_pid(pidfile)
    if pid_alive(pid) and not is_supervisor(pid, root):
        sys.stderr.write(f"edgeship-agent: {pidfile} names process {pid}, which is not this device root's supervisor: "
                         "not signalling it\n")
        pid = None
    if pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    for f in ("supervisor.pid", "child.pid", "state.json"):
        try:
            os.unlink(os.path.join(root, "run", f))
        except OSError:
            pass


def none_state(root: str) -> dict:
    run = os.path.join(root, "run")
    state = read_json(os.path.join(run, "state.json"), {}) or {}
    sup, child = read_pid(os.path.join(run, "supervisor.pid")), read_pid(os.path.join(run, "child.pid"))
    return {"running": pid_alive(sup) and pid_alive(child), "pid": child, "supervisor_pid": sup,
            "restarts": state.get("restarts", 0), "last_exit": state.get("last_exit")}


def systemctl(*args: str, check: bool = True) -> str:
    if shutil.which("systemctl") is None:
        if check:
            raise StepFailed("systemctl is not installed on this device (use --init none)")
        return ""
    proc = subprocess.run(["systemctl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise StepFailed(f"systemctl {' '.join(args)} failed: {proc.stdout.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace").strip()


def systemd_state(service: str) -> dict:
    out = systemctl("show", service, "-p", "ActiveState,MainPID,NRestarts,ExecMainStatus", check=False)
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {"running": kv.get("ActiveState") == "active", "pid": int(kv.get("MainPID") or 0) or None,
            "restarts": int(kv.get("NRestarts") or 0), "last_exit": kv.get("ExecMainStatus")}


def unit_value(unit: str, key: str) -> str:
    for line in unit.splitlines():
        if line.startswith(key + "="):
            return line.split("=", 1)[1].strip()
    return ""


NOLOGIN = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false") if os.path.exists(s)), "/bin/false")
ADD_GROUP = {"groupadd": lambda g: ["groupadd", "--system", g], "addgroup": lambda g: ["addgroup", "-S", g]}
ADD_USER = {
    "useradd": lambda u, g: ["useradd", "--system", "--gid", g, "--no-create-home", "--home-dir", "/nonexistent", "--shell", NOLOGIN, u],
    "adduser": lambda u, g: ["adduser", "-S", "-D", "-H", "-G", g, "-s", NOLOGIN, u],  # busybox
}


def _exists(db, name: str) -> bool:
    try:
        db(name)
        return True
    except KeyError:
        return False


def _add(tools: dict, what: str, *args: str) -> None:
    tool = next((t for t in tools if shutil.which(t)), None)
    if tool is None:
        raise StepFailed(f"cannot create {what}: neither {' nor '.join(tools)} is installed on the device")
    run_checked(tools[tool](*args), f"create {what}")


def prepare_service_identity(root: str, unit: str):
    """Make the unit's User=/Group= exist (system accounts), give them data/ and logs/ (its
    ReadWritePaths), and drop SupplementaryGroups= the device does not have (systemd would refuse
    to start). Returns (unit text, facts)."""
    user, group = unit_value(unit, "User") or "root", unit_value(unit, "Group")
    group = group or user
    facts = {"service_user": user, "service_group": group, "created_user": False, "created_group": False, "dropped_groups": []}
    if user != "root":
        if not _exists(grp.getgrnam, group):
            _add(ADD_GROUP, f"group {group}", group)
            facts["created_group"] = True
        if not _exists(pwd.getpwnam, user):
            _add(ADD_USER, f"user {user}", user, group)
            facts["created_user"] = True
        give_dirs([os.path.join(root, d) for d in ("data", "logs")], pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)
    else:
        give_dirs([os.path.join(root, d) for d in ("data", "logs")], 0, 0)
    wanted = unit_value(unit, "SupplementaryGroups").split()
    present = [g for g in wanted if _exists(grp.getgrnam, g)]
    facts["dropped_groups"] = [g for g in wanted if g not in present]
    if facts["dropped_groups"]:
        unit = "\n".join(f"SupplementaryGroups={' '.join(present)}" if line.startswith("SupplementaryGroups=") else line
                         for line in unit.split("\n"))
    return unit, facts


def install_unit(root: str, service: str) -> dict:
    release = os.path.realpath(os.path.join(root, "current"))
    with open(os.path.join(release, "systemd", "edgeship.service.in")) as f:
        unit = f.read().replace("@DEVICE_ROOT@", root)
    unit, facts = prepare_service_identity(root, unit)
    path = f"/etc/systemd/system/{service}.service"
    old = open(path).read() if os.path.exists(path) else None
    if old != unit:
        with open(path + ".tmp", "w") as f:
            f.write(unit)
        os.replace(path + ".tmp", path)
        systemctl("daemon-reload")
    systemctl("enable", f"{service}.service")
    return facts


def systemd_start(a) -> dict:
    facts = install_unit(a.root, a.service)
    group = facts.get("service_group") or "root"
    protect_secrets(os.path.realpath(os.path.join(a.root, "current")), 0 if group == "root" else grp.getgrnam(group).gr_gid)
    systemctl("restart", f"{a.service}.service")
    return facts


INIT = {
    "none": {"start": none_start, "stop": lambda a: none_stop(a.root), "state": lambda a: none_state(a.root)},
    "systemd": {
        "start": systemd_start,
        "stop": lambda a: systemctl("stop", f"{a.service}.service", check=False),
        "state": lambda a: systemd_state(a.service),
    },
}


def probe(url: str, timeout: float = 2.0):
    """(HTTP status, body) of a GET; (None, why) when nothing answered."""
    import urllib.error

    import ssl

    # https on 127.0.0.1 is the device's own service with its own (often self-signed) certificate: the probe
    # sends nothing secret and only asks whether it answers, so the certificate is not checked
    context = ssl._create_unverified_context() if url.startswith("https:") else None  # noqa: SLF001
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as r:
            return r.status, r.read(4096).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:  # 503 "starting" / "failed": the body says why
        try:
            return e.code, e.read(4096).decode("utf-8", "replace")
        except Exception:  # noqa: BLE001
            return e.code, ""
    except Exception as e:  # noqa: BLE001 - any failure means "not healthy yet"
        return None, f"{type(e).__name__}: {e}"


def names_its_release(root: str, version: str) -> bool:
    """Whether the release's run.sh exports EDGESHIP_RELEASE (releases bundled before that cannot name
    themselves in /health, and are then taken at their word)."""
    try:
        with open(os.path.join(root, "releases", version, "run.sh")) as f:
            return "EDGESHIP_RELEASE" in f.read()
    except OSError:
        return False


def health_answer(body: str) -> dict:
    """A /health answer as a dict ({} when it is not JSON)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def wait_healthy(a, meta: dict) -> dict:
    """Healthy = the runtime of this release runs, has processed a frame from its source, its
    outputs work (``/health`` 200 naming the release) and it is not restarting."""
    url = health_url(a.root, meta)
    strict = names_its_release(a.root, a.version)
    deadline = time.monotonic() + a.timeout
    status, body, state = None, "", {}
    while time.monotonic() < deadline:
        state = INIT[a.init]["state"](a)
        if state.get("restarts", 0) >= 2 and not state["running"] or state.get("restarts", 0) >= 3:
            return {"healthy": False, "reason": f"the runtime keeps exiting (restarts {state['restarts']}, "
                    f"last exit {state.get('last_exit')})", **state, "url": url}
        if state["running"]:
            status, body = probe(url)
            answer = health_answer(body)
            if status == 200 and (answer.get("release") == a.version or not strict):
                return {"healthy": True, "reason": "", **state, "url": url, "health": answer or body[:500]}
            if status == 200:  # something answers on the port, but not the release just started
                body = f"answered by release {answer.get('release')!r}, not {a.version!r}"
            elif answer.get("status"):
                body = f"{answer['status']}: {answer.get('reason') or 'no reason given'}"
        time.sleep(0.25)
    why = f"not healthy within {a.timeout:g}s: /health at {url} says {body}" if state.get("running") else \
        f"the runtime is not running after {a.timeout:g}s"
    return {"healthy": False, "reason": why, **state, "url": url}


def switch(root: str, version) -> None:
    """Point ``current`` at ``version`` (None: no release runs) and ``previous`` at the old one."""
    if version is not None and not os.path.isfile(os.path.join(root, "releases", version, VERIFIED)):
        raise StepFailed(f"release {version} is not installed and verified under {root}/releases")
    old = current_version(root)
    if version is None:
        if os.path.lexists(os.path.join(root, "current")):
            os.unlink(os.path.join(root, "current"))
        return
    for name, target in (("previous", old), ("current", version)):
        if target and not (name == "previous" and target == version):
            tmp = os.path.join(root, f".{name}.tmp{os.getpid()}")
            os.symlink(os.path.join("releases", target), tmp)
            os.replace(tmp, os.path.join(root, name))
    hist_path = os.path.join(root, "history.json")
    hist = read_json(hist_path, []) or []
    hist.append({"version": version, "time": time.time()})
    write_json(hist_path, hist[-100:])


def service_log(a, lines: int) -> str:
    if a.init == "systemd":
        return subprocess.run(["journalctl", "-u", a.service, "-n", str(lines), "--no-pager"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL).stdout.decode(errors="replace")
    return tail(os.path.join(a.root, "logs", "edgeship.log"), lines)


def failed_reason(root: str, version: str):
    """Why ``version`` was marked failed (None when it is not)."""
    marker = os.path.join(root, "releases", version, FAILED_MARKER)
    if not os.path.exists(marker):
        return None
    return (read_json(marker, {}) or {}).get("reason") or "failed its health check"


def stop_all(a) -> None:
    """Stop the service in the mode asked for and in the mode the device remembers (they differ when
    the init system changes between flashes)."""
    modes = [a.init] + [m for m in (remembered(a.root).get("init"),) if m in INIT and m != a.init]
    for mode in modes:
        INIT[mode]["stop"](a)


def cmd_activate(a) -> dict:
    valid_version(a.version)
    meta = read_json(os.path.join(a.root, "releases", a.version, "release.json"), {})
    if a.env:
        tmp = os.path.join(a.root, "device.env.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)  # may hold secrets
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{kv}\n" for kv in a.env))
        os.replace(tmp, os.path.join(a.root, "device.env"))
    stop_all(a)
    switch(a.root, a.version)
    started = INIT[a.init]["start"](a) or {}
    remember(a)
    health = wait_healthy(a, meta)
    out = {"ok": health["healthy"], "version": a.version, "init": a.init, **started, **health}
    marker = os.path.join(a.root, "releases", a.version, FAILED_MARKER)
    if health["healthy"] and os.path.exists(marker):
        os.unlink(marker)
    elif not health["healthy"]:
        out["log"] = service_log(a, 20)
        said = [ln.strip() for ln in out["log"].splitlines() if ln.strip() and not ln.startswith("{")]
        errors = [ln for ln in said if ln.lower().startswith(("error", "critical"))]
        if errors or said:
            out["reason"] = f"{out['reason']}; its log ends: {(errors or said)[-1][:300]}"
        write_json(marker, {"time": time.time(), "reason": out["reason"]})
    return out


def rollback_candidates(root: str) -> list:
    """Releases to go back to, newest activation first: installed, verified, never marked failed,
    not the current one."""
    cur, seen, out = current_version(root), set(), []
    for entry in reversed(read_json(os.path.join(root, "history.json"), []) or []):
        v = entry.get("version") if isinstance(entry, dict) else None
        if not isinstance(v, str) or not VERSION_RE.match(v) or v == cur or v in seen:
            continue
        seen.add(v)
        release = os.path.join(root, "releases", v)
        if os.path.isfile(os.path.join(release, VERIFIED)) and failed_reason(root, v) is None:
            out.append(v)
    return out


def stop_service(a, why: str) -> dict:
    """No healthy release: stop the runtime and leave no ``current`` (a reboot starts nothing)."""
    failed = current_version(a.root)
    stop_all(a)
    if a.init == "systemd":
        systemctl("disable", f"{a.service}.service", check=False)
    switch(a.root, None)
    return {"ok": False, "version": None, "stopped": True, "failed_release": failed,
            "reason": f"{why}: the service is stopped and no release runs on this device"}


def cmd_rollback(a) -> dict:
    """Back to ``--version``, or to the newest release that is not marked failed; when it fails its
    health check too, on to the next, and back to where it started if that one was fine. When the
    current release failed and no other is healthy, the service is stopped (no release runs)."""
    if a.version:
        valid_version(a.version)
        why = failed_reason(a.root, a.version)
        if why is not None:
            raise StepFailed(f"release {a.version} failed its health check ({why}): rolling back to it would run a broken "
                             "release; flash it again to retry it")
        return cmd_activate(a)
    original = current_version(a.root)
    original_ok = original is not None and failed_reason(a.root, original) is None
    candidates = rollback_candidates(a.root)
    if not candidates and original_ok:
        raise StepFailed(f"no earlier release to roll back to under {a.root} ({original} keeps running)")
    tried = []
    for version in candidates:
        a.version = version
        out = cmd_activate(a)
        if out["ok"]:
            return {**out, "tried": tried + [version]}
        tried.append(f"{version} ({out.get('reason')})")
    if original_ok:  # every older release failed now: the one that ran before is still the best there is
        a.version = original
        out = cmd_activate(a)
        return {**out, "ok": False, "tried": tried, "reason": f"no earlier release is healthy (tried {'; '.join(tried)}); "
                f"back on {original}" + ("" if out["ok"] else f", which is not healthy either: {out.get('reason')}")}
    why = "no earlier release to roll back to" if not tried else f"no healthy release to roll back to (tried {'; '.join(tried)})"
    return {**stop_service(a, why), "tried": tried}


def release_names(root: str) -> list:
    """Folders under releases/ that are releases (a release.json inside), sorted."""
    rel = os.path.join(root, "releases")
    if not os.path.isdir(rel):
        return []
    return sorted(v for v in os.listdir(rel) if not v.startswith(".") and VERSION_RE.match(v)
                  and os.path.isfile(os.path.join(rel, v, "release.json")))


def installed_at(root: str, version) -> float | None:
    """When a release was installed on this device (its verified marker's time, epoch seconds)."""
    try:
        return round(os.lstat(os.path.join(root, "releases", version, VERIFIED)).st_mtime, 3) if version else None
    except OSError:
        return None


def cmd_status(a) -> dict:
    cur = current_version(a.root)
    meta = read_json(os.path.join(a.root, "releases", cur, "release.json"), {}) if cur else {}
    state = INIT[a.init]["state"](a)
    status, body = probe(health_url(a.root, meta)) if cur and state["running"] else (None, "")
    answer = health_answer(body) if status is not None else {}
    releases = release_names(a.root)
    rel = os.path.join(a.root, "releases")
    stray = sorted(v for v in os.listdir(rel) if not v.startswith(".") and v not in releases) if os.path.isdir(rel) else []
    return {"ok": True, "current": cur, "previous": current_version(a.root, "previous"), "releases": releases,
            "failed": {v: failed_reason(a.root, v) for v in releases if failed_reason(a.root, v)}, "stray": stray,
            "init": a.init, "target": meta.get("target"), "artifact": meta.get("artifact"), **state,
            "healthy": status == 200, "health_status": answer.get("status"), "health_reason": answer.get("reason") or None,
            "frames_processed": answer.get("frames_processed"), "infer_ms": answer.get("infer_ms"),
            "uptime_s": answer.get("uptime_s"), "installed_at": installed_at(a.root, cur),
            "degraded": answer.get("degraded"),
            "health": body[:500] if status == 200 else None}


def follow_log(a) -> dict:
    """Print the service log as it grows until the workstation goes away or ``--timeout`` passes."""
    import select

    if a.init == "systemd":
        argv = ["journalctl", "-u", a.service, "-n", str(a.lines), "-f", "--no-pager"]
        os.execvp(argv[0], argv)
    out = sys.stdout
    out.write(tail(os.path.join(a.root, "logs", "edgeship.log"), a.lines) + "\n")
    out.flush()
    path = os.path.join(a.root, "logs", "edgeship.log")
    try:
        pos = os.stat(path).st_size
    except OSError:
        pos = 0
    watch = select.poll()
    watch.register(out.fileno(), select.POLLERR | select.POLLHUP)
    deadline = time.monotonic() + a.timeout if a.timeout else None
    while deadline is None or time.monotonic() < deadline:
        if watch.poll(500):  # the reader (ssh, the workstation) is gone
            break
        try:
            fd = open_plain(path)
        except OSError:
            continue
        try:
            size = os.fstat(fd).st_size
            if size < pos:  # rotated or truncated
                pos = 0
            os.lseek(fd, pos, os.SEEK_SET)
            data = os.read(fd, min(size - pos, 1 << 20))
        finally:
            os.close(fd)
        pos += len(data)
        if data:
            try:
                out.write(data.decode("utf-8", "replace"))
                out.flush()
            except BrokenPipeError:
                break
    return {"ok": True}


def cmd_logs(a) -> dict:
    if a.follow:
        return follow_log(a)
    return {"ok": True, "log": service_log(a, a.lines)}


def cmd_prune(a) -> dict:
    keep = set()
    for entry in reversed(read_json(os.path.join(a.root, "history.json"), []) or []):
        if len(keep) >= a.keep:
            break
        if isinstance(entry, dict) and isinstance(entry.get("version"), str):
            keep.add(entry["version"])
    keep |= {v for v in (current_version(a.root), current_version(a.root, "previous")) if v}
    rel = os.path.join(a.root, "releases")
    removed = []
    for v in release_names(a.root):  # releases only: anything else under releases/ is left alone
        if v not in keep:
            shutil.rmtree(os.path.join(rel, v), ignore_errors=True)
            removed.append(v)
    used = {os.path.realpath(os.path.join(rel, v, "venv")) for v in release_names(a.root)}
    venvs = a.venvs or os.path.join(a.root, "venvs")
    removed_venvs = []
    for v in sorted(os.listdir(venvs)) if os.path.isdir(venvs) else []:
        full = os.path.realpath(os.path.join(venvs, v))
        if full not in used and not v.startswith(".tmp-") and not v.endswith(".lock"):
            shutil.rmtree(full, ignore_errors=True)
            removed_venvs.append(v)
    return {"ok": True, "kept": sorted(keep), "removed": removed, "removed_venvs": removed_venvs}


# ---- what the device remembers about how it runs the service --------------------------------------
DEVICE_STATE = "device.json"


def remembered(root: str) -> dict:
    return read_json(os.path.join(root, DEVICE_STATE), {}) or {}


def remember(a) -> None:
    write_json(os.path.join(a.root, DEVICE_STATE), {"init": a.init, "service": a.service, "run_as": a.run_as})


def resolve_init(a) -> None:
    """``--init auto``: the mode this device was last flashed with, else systemd where it runs (as
    root), else edgeship's own supervisor. ``--run-as`` defaults to the remembered user."""
    known = remembered(a.root)
    if a.init == "auto":
        mode = known.get("init")
        if mode not in INIT:
            mode = "systemd" if os.path.isdir("/run/systemd/system") and os.geteuid() == 0 else "none"
        a.init = mode
    if a.run_as is None and known.get("init") == a.init:
        a.run_as = known.get("run_as")


# ---- the --init none supervisor ---------------------------------------------------------------
def cmd_supervise(a) -> dict:
    run = os.path.join(a.root, "run")
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "supervisor.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    release = os.path.realpath(os.path.join(a.root, "current"))
    stopping = {"flag": False, "child": None}

    def on_term(signum, frame):
        stopping["flag"] = True
        if stopping["child"] and stopping["child"].poll() is None:
            stopping["child"].terminate()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    restarts, last_exit = 0, None
    while not stopping["flag"]:
        child = subprocess.Popen(["/bin/sh", os.path.join(release, "run.sh")], cwd=os.path.join(a.root, "data"))
        stopping["child"] = child
        with open(os.path.join(run, "child.pid"), "w") as f:
            f.write(f"{child.pid}\n")
        write_json(os.path.join(run, "state.json"), {"release": os.path.basename(release), "restarts": restarts, "last_exit": last_exit})
        try:
            last_exit = child.wait()
        except KeyboardInterrupt:
            last_exit = child.wait()
        if stopping["flag"]:
            break
        restarts += 1
        write_json(os.path.join(run, "state.json"), {"release": os.path.basename(release), "restarts": restarts, "last_exit": last_exit})
        time.sleep(min(30.0, a.restart_sec * restarts))
    if stopping["child"] is not None and stopping["child"].poll() is None:
        try:
            stopping["child"].wait(timeout=10)
        except subprocess.TimeoutExpired:
            stopping["child"].kill()
    return {"ok": True, "restarts": restarts, "last_exit": last_exit}


COMMANDS = {
    "preflight": cmd_preflight, "install": cmd_install, "activate": cmd_activate, "rollback": cmd_rollback,
    "status": cmd_status, "logs": cmd_logs, "prune": cmd_prune, "supervise": cmd_supervise,
}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgeship-agent")
    ap.add_argument("command", choices=sorted(COMMANDS))
    ap.add_argument("--root", required=True)
    ap.add_argument("--init", choices=sorted([*INIT, "auto"]), default="auto")
    ap.add_argument("--service", default="edgeship")
    ap.add_argument("--device", action="append", default=[])
    ap.add_argument("--part")
    ap.add_argument("--sha256")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--venvs")
    ap.add_argument("--version")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--keep", type=int, default=3)
    ap.add_argument("--lines", type=int, default=100)
    ap.add_argument("--restart-sec", type=float, default=3.0)
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--run-as", help="--init none, run as root: the user the runtime runs as")
    ap.add_argument("--system-opencv", action="store_true", help="preflight: report the cv2 of this Python")
    ap.add_argument("--need-file", action="append", default=[], help="preflight: a file the release needs on the device")
    ap.add_argument("--follow", action="store_true", help="logs: keep printing the log as it grows")
    return ap


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    a.root = os.path.abspath(a.root)
    os.umask(0o022)  # releases and venvs must stay readable by the (unprivileged) service user
    try:
        resolve_init(a)
        out = COMMANDS[a.command](a)
    except (StepFailed, OSError, tarfile.TarError, EOFError) as e:
        out = {"ok": False, "reason": f"{type(e).__name__ if not isinstance(e, StepFailed) else 'failed'}: {e}"}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if out.get("ok") else 3


if __name__ == "__main__":
    sys.exit(main())
