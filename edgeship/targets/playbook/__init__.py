"""The same rollout through Ansible: a playbook and role that drive edgeship's device agent.

    edgeship ansible init deploy/               # writes the playbook, the role and the filter plugin
    ansible-playbook -i fleet.ini deploy/edgeship-rollout.yml -e edgeship_bundle=$PWD/line3.tar.gz
    edgeship flash line3.tar.gz --hosts fleet.ini --engine ansible --canary 1 --waves 25%,100%

The role does on each device what ``edgeship flash`` does (:func:`~edgeship.targets.flash.flash_host`):
preflight, upload into ``DEVICE_ROOT/incoming``, verify the checksums and install, switch and health
check, roll back on failure, prune. It runs the same ``agent.py`` with the same arguments: the
arguments, the preflight verdict and the canary's soak verdict come from the filters below
(:data:`FILTERS`, loaded by the project's ``filter_plugins/edgeship.py``), which call edgeship's own
functions, so the two engines cannot drift apart. Batches are Ansible's ``serial`` (the rollout's
:meth:`~edgeship.targets.rollout.RolloutPlan.serial`); the failure budget is a task after each batch
that counts the play's failed hosts (the same rule as edgeship's engine), and
``edgeship_max_fail_percentage`` is Ansible's own per-batch ``max_fail_percentage`` on top of it.

Variables (extra vars or inventory): ``edgeship_bundle`` (required), ``edgeship_options`` (a mapping
of :class:`~edgeship.targets.flash.FlashOptions` fields), ``edgeship_serial``, ``edgeship_canary``,
``edgeship_soak``, ``edgeship_max_slowdown``, ``edgeship_max_failed`` (devices),
``edgeship_rollback_on_halt``, ``edgeship_results`` (a folder on the controller for per-device outcomes);
per host: ``ansible_user``, ``device_root``, ``http_port``, ``edgeship_env``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from ...errors import DeployError, InputError
from ..flash import FlashOptions, activate_args, agent_args, preflight_args, preflight_problems, preflight_warnings, venv_args
from ..remote import AGENT, HostSpec, SSHOptions

FILES = Path(__file__).with_name("files")
PLAYBOOK = "edgeship-rollout.yml"
ROLE = "edgeship_device"
# what `edgeship ansible init DIR` writes: path in DIR -> source
PROJECT = {
    PLAYBOOK: FILES / "rollout.yml",
    f"roles/{ROLE}/tasks/main.yml": FILES / "role_main.yml",
    f"roles/{ROLE}/tasks/record.yml": FILES / "role_record.yml",
    f"roles/{ROLE}/tasks/agent.yml": FILES / "role_agent.yml",
    f"roles/{ROLE}/tasks/soak.yml": FILES / "role_soak.yml",
    f"roles/{ROLE}/tasks/halt.yml": FILES / "role_halt.yml",
    f"roles/{ROLE}/defaults/main.yml": FILES / "role_defaults.yml",
    f"roles/{ROLE}/files/agent.py": AGENT,
    "filter_plugins/edgeship.py": FILES / "filter_plugin.py",
}


# ---- filters: edgeship's own rules, for the role ----------------------------------------------------------
def _options(d: dict[str, Any]) -> FlashOptions:
    known = FlashOptions.__dataclass_fields__
    return FlashOptions(**{k: (tuple(v) if k == "env" else v) for k, v in (d or {}).items() if k in known})


def _host(d: dict[str, Any]) -> HostSpec:
    from ..inventory import env_items

    def given(key: str) -> Any:  # unset inventory variables arrive as '' (or None)
        v = d.get(key)
        return None if v in (None, "", "None") else v

    env = env_items(d["env"], f"host {d.get('name')}") if d.get("env") else ()
    return HostSpec(user=str(d["user"]), host=str(given("host") or "device"), device_root=given("device_root"),
                    http_port=int(given("http_port")) if given("http_port") else None, name=given("name"), env=env)


def release_filter(bundle: str) -> dict[str, Any]:
    """The bundle's release.json plus its SHA-256 and size (what the role uploads and checks)."""
    from ...fileio import sha256_file
    from ..bundle import read_release

    return {**read_release(bundle), "sha256": sha256_file(bundle), "size_mb": os.path.getsize(bundle) / 2**20}


def agent_filter(command: str, host: dict, options: dict, release: dict | None = None, facts: dict | None = None,
                 part: str | None = None, version: str | None = None) -> list[str]:
    """The agent's arguments for ``command``, as :func:`~edgeship.targets.flash.flash_host` gives them."""
    h, o = _host(host), _options(options)
    args = agent_args(h, o)
    if command == "preflight":
        return args + preflight_args(release or {})
    if command == "install":
        python = (facts or {}).get("python_executable") or o.python
        return args + venv_args(o) + ["--part", str(part), "--sha256", str((release or {})["sha256"]), "--python", python]
    if command == "activate":
        return args + activate_args(h, o, str((release or {})["version"]))
    if command == "prune":
        return args + venv_args(o) + ["--keep", str(o.keep)]
    if command == "rollback":
        return args + (["--version", version] if version else []) + ["--timeout", str(o.health_timeout), "--restart-sec", "1"]
    if command == "status":
        return args
    raise InputError(f"edgeship_agent: unknown agent command {command!r}")


def problems_filter(facts: dict, release: dict, options: dict) -> list[str]:
    return preflight_problems(release, facts, size_mb=float(release.get("size_mb") or 0.0), init=_options(options).init)


def warnings_filter(facts: dict, release: dict) -> list[str]:
    return preflight_warnings(release, facts)


def soak_filter(now: dict, before: dict, version: str, max_slowdown: Any = None) -> str:
    from ..rollout import soak_problem

    slow = None if max_slowdown in (None, "", "none") else float(max_slowdown)
    return soak_problem(before or {}, now or {}, version, slow) or ""


def answer_filter(result: dict) -> dict[str, Any]:
    """The agent's JSON answer from a ``script`` task's result (its last stdout line)."""
    lines = [ln for ln in (result.get("stdout") or "").splitlines() if ln.strip()]
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        err = (result.get("stderr") or result.get("msg") or "").strip()
        return {"ok": False, "reason": f"the device agent gave no answer (exit {result.get('rc')}): {err[-500:]}"}
    return answer


FILTERS: dict[str, Callable] = {"edgeship_release": release_filter, "edgeship_agent": agent_filter,
                                "edgeship_problems": problems_filter, "edgeship_warnings": warnings_filter,
                                "edgeship_soak": soak_filter, "edgeship_answer": answer_filter}


# ---- the project and a run of it ------------------------------------------------------------------------
def write_project(out: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write the playbook, the role and the filter plugin into ``out``; refuses to overwrite unless ``force``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file: expected a folder for the Ansible project")
    existing = [rel for rel in PROJECT if (out / rel).exists()]
    if existing and not force:
        raise InputError(f"{out / existing[0]} exists: pass --force to overwrite the edgeship files in {out}")
    written = []
    for rel, src in PROJECT.items():
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        written.append(dst)
    return written


def ansible_playbook() -> str:
    """The ansible-playbook next to this Python (the ``ansible`` extra), or on PATH."""
    here = Path(sys.executable).with_name("ansible-playbook")
    found = str(here) if here.exists() else shutil.which("ansible-playbook")
    if not found:
        raise InputError("--engine ansible needs ansible-core: pip install 'edgeship[ansible]'")
    return found


def inventory(hosts: Sequence[HostSpec], ssh: SSHOptions | None, options: FlashOptions) -> dict[str, Any]:
    """A YAML inventory of ``hosts`` in rollout order, with how to reach them."""
    ssh = ssh or SSHOptions()
    common = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(ssh.connect_timeout)}"]
    if ssh.known_hosts:
        common += ["-o", f"UserKnownHostsFile={ssh.known_hosts}"]
    common += ["-o", f"StrictHostKeyChecking={'accept-new' if ssh.accept_new_host_key else 'yes'}"]
    out: dict[str, Any] = {}
    for i, h in enumerate(hosts):
        v: dict[str, Any] = {**{k: x for k, x in h.vars.items()}, "ansible_host": h.host.strip("[]"),
                             "ansible_user": h.user, "ansible_python_interpreter": options.python,
                             "ansible_ssh_common_args": " ".join(common), "edgeship_label": h.label}
        port = h.port or ssh.port
        if port:
            v["ansible_port"] = port
        if ssh.identity:
            v["ansible_ssh_private_key_file"] = ssh.identity
        if h.device_root:
            v["device_root"] = h.device_root
        if h.http_port:
            v["http_port"] = h.http_port
        if h.env:
            v["edgeship_env"] = list(h.env)
        v["ansible_become"] = bool(options.sudo and h.user != "root")
        out[f"d{i:04d}"] = v
    return {"all": {"hosts": out}}


def run_playbook(bundle: str | os.PathLike, hosts: Sequence[HostSpec], plan: Any, *, ssh: SSHOptions | None = None,
                 options: FlashOptions | None = None, parallel: int = 4, echo: Callable[[str], None] | None = None,
                 timeout: float | None = None) -> Any:
    """``edgeship flash --engine ansible``: run the playbook over ``hosts`` with ``plan``'s batches and budget;
    returns a :class:`~edgeship.targets.rollout.RolloutResult` read from the per-device outcomes."""
    import yaml

    from ..bundle import read_release
    from ..rollout import DeviceOutcome, RolloutResult, batches

    options = options or FlashOptions()
    meta = read_release(bundle)  # a corrupt bundle stops here, before Ansible starts
    exe = ansible_playbook()
    budget = plan.budget(len(hosts))
    with tempfile.TemporaryDirectory(prefix="edgeship-ansible-") as tmp_s:
        tmp = Path(tmp_s)
        write_project(tmp / "project")
        (tmp / "inventory.yml").write_text(yaml.safe_dump(inventory(hosts, ssh, options), sort_keys=False))
        results = tmp / "results"
        results.mkdir()
        extra = {"edgeship_bundle": str(Path(bundle).resolve()), "edgeship_options": {**asdict(options), "env": list(options.env)},
                 "edgeship_serial": plan.serial(), "edgeship_canary": plan.canary, "edgeship_soak": plan.soak_s,
                 "edgeship_max_slowdown": plan.max_slowdown, "edgeship_max_failed": len(hosts) if budget is None else budget,
                 "edgeship_rollback_on_halt": plan.rollback_on_halt, "edgeship_results": str(results)}
        (tmp / "extra.json").write_text(json.dumps(extra))
        env = {**os.environ, "ANSIBLE_FORKS": str(max(1, parallel)), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_RETRY_FILES_ENABLED": "0", "ANSIBLE_LOCAL_TEMP": str(tmp / "local"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp"), "ANSIBLE_HOME": str(tmp / "home"),
               "ANSIBLE_PYTHON_INTERPRETER": options.python, "ANSIBLE_DEPRECATION_WARNINGS": "0",
               "ANSIBLE_SYSTEM_WARNINGS": "0", "ANSIBLE_FILTER_PLUGINS": str(tmp / "project" / "filter_plugins")}
        argv = [exe, "-i", str(tmp / "inventory.yml"), str(tmp / "project" / PLAYBOOK), "-e", f"@{tmp / 'extra.json'}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp, text=True)
        log_lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            log_lines.append(line.rstrip())
            if echo and line.startswith(("PLAY [", "fatal:")):
                echo(line.rstrip())
        code = proc.wait(timeout)
        outcomes, names = [], {f"d{i:04d}": h for i, h in enumerate(hosts)}
        sizes = batches(len(hosts), plan)
        batch_of = {i: b for b, (start, size) in enumerate(_starts(sizes), 1) for i in range(start, start + size)}
        for i, key in enumerate(names):
            f = results / f"{key}.json"
            if f.exists():
                d = json.loads(f.read_text())
                outcomes.append(DeviceOutcome(host=hosts[i].label, batch=batch_of[i], status=d.get("status", "failed"),
                                              reason=d.get("reason") or "", previous=d.get("previous"),
                                              running=d.get("running"), seconds=d.get("seconds"), soak=d.get("soak") or {},
                                              warnings=list(d.get("warnings") or [])))
            else:
                outcomes.append(DeviceOutcome(host=hosts[i].label, status="skipped", reason="the rollout halted before it"))
    halted = None
    if code != 0 and any(o.status == "skipped" for o in outcomes):
        halted = next((ln.split("msg", 1)[-1].strip(' :"}') for ln in reversed(log_lines) if "failure budget" in ln),
                      f"ansible-playbook exited {code}")
    if code not in (0, 2, 4) and not any(o.status != "skipped" for o in outcomes):
        raise DeployError(f"ansible-playbook failed (exit {code}) before any device: " + " | ".join(log_lines[-8:]))
    completed = halted is None and all(o.status != "skipped" for o in outcomes)
    if echo:
        echo(f"ansible-playbook finished in {time.monotonic() - t0:.1f} s (exit {code})")
    return RolloutResult(meta["version"], completed, halted, outcomes)


def _starts(sizes: list[int]) -> list[tuple[int, int]]:
    out, start = [], 0
    for s in sizes:
        out.append((start, s))
        start += s
    return out
