"""Staged rollouts: a canary that soaks, waves, a failure budget that halts, and a state file to resume.

    plan = RolloutPlan(canary=1, soak_s=120, waves=("25%", "100%"), max_failed="2", rollback_on_halt=True)
    result = roll_out("line3.tar.gz", hosts, plan, ssh=ssh, options=opts, state_path="rollout.json")

Batches follow Ansible's ``serial`` rule, so ``--engine ansible`` makes the same batches: the canary
(if any) is the first batch, then each wave is a batch size (``N`` devices or ``P%`` of the whole
fleet, rounded down, at least 1), the last size repeating until every device had its turn. Within a
batch at most ``parallel`` devices are flashed at once.

After each device the failure budget is checked (``--max-failed N`` or ``P%`` of the fleet; with a
canary or waves and no budget: 0): once more devices failed than it allows, no further device is
touched (devices of the batch that have not started are skipped), and with ``rollback_on_halt``
the devices of that batch that did switch go back to the release they ran before.

The canary batch soaks: after ``soak_s`` seconds each canary device must still be healthy on the
new release, have processed frames during the soak, not have restarted, and (``max_slowdown``)
infer no slower than the release it ran before by more than that many percent. A canary that fails
the soak is rolled back and counts as failed.

The state file (JSON, rewritten atomically after every device) holds the bundle, the plan, the
connection and flash options and every device's outcome; :func:`resume` reads it and finishes the
rollout, first asking each unfinished device what it runs, so a device that switched before the
workstation died is not flashed again.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import InputError
from ..fileio import sha256_file
from .bundle import read_release
from .flash import FlashOptions, FlashResult, flash_host
from .remote import HostSpec, SSHOptions

STATE_VERSION = 1
_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<pct>%?)$")
FAILED = ("failed", "rolled-back", "refused", "soak-failed")  # statuses that spend the failure budget


def size_value(text: str, what: str) -> tuple[float, bool]:
    """``N`` or ``P%`` -> (number, is_percent); one-line error naming ``what``."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise InputError(f"{what}: expected a number of devices N or a percentage P%, got {text!r}")
    n, pct = float(m["n"]), bool(m["pct"])
    if pct and not 0 < n <= 100:
        raise InputError(f"{what}: a percentage must be in (0, 100], got {text!r}")
    if not pct and (n != int(n) or n < 0):
        raise InputError(f"{what}: expected a whole number of devices, got {text!r}")
    return n, pct


def of_fleet(text: str, total: int, what: str, *, at_least: int = 1) -> int:
    """A size as a device count: ``P%`` of ``total`` rounded down (Ansible's rule), at least ``at_least``."""
    n, pct = size_value(text, what)
    return max(at_least, int(n * total / 100.0)) if pct else int(n)


@dataclass(frozen=True)
class RolloutPlan:
    """How a rollout is staged (see the module docstring). All defaults: every device at once, no budget."""

    canary: int = 0
    soak_s: float = 0.0
    waves: tuple[str, ...] = ()
    wave_size: int | None = None
    max_failed: str | None = None
    max_slowdown: float | None = None  # percent
    rollback_on_halt: bool = False

    def __post_init__(self) -> None:
        if self.canary < 0:
            raise InputError(f"--canary must be 0 or more devices, got {self.canary}")
        if self.soak_s < 0:
            raise InputError(f"--soak must be 0 or more seconds, got {self.soak_s}")
        if self.waves and self.wave_size:
            raise InputError("give --waves or --wave-size, not both")
        if self.wave_size is not None and self.wave_size < 1:
            raise InputError(f"--wave-size must be at least 1, got {self.wave_size}")
        for w in self.waves:
            n, _ = size_value(w, "--waves")
            if n == 0:
                raise InputError(f"--waves: a wave of 0 devices never ends, got {w!r}")
        if self.max_failed is not None:
            size_value(self.max_failed, "--max-failed")
        if self.max_slowdown is not None and self.max_slowdown < 0:
            raise InputError(f"--max-slowdown must be 0 or more percent, got {self.max_slowdown}")
        if (self.soak_s or self.max_slowdown is not None) and not self.canary:
            raise InputError("--soak and --max-slowdown judge the canary: give --canary N")

    @property
    def staged(self) -> bool:
        return bool(self.canary or self.waves or self.wave_size)

    def serial(self) -> list[int | str]:
        """The batches as Ansible's ``serial`` list (what ``--engine ansible`` passes on)."""
        sizes: list[int | str] = [self.canary] if self.canary else []
        if self.waves:
            sizes += [w if w.endswith("%") else int(w) for w in self.waves]
        elif self.wave_size:
            sizes.append(self.wave_size)
        return sizes or ["100%"]

    def budget(self, total: int) -> int | None:
        """Failures allowed before the rollout halts (None: never halts)."""
        if self.max_failed is not None:
            return of_fleet(self.max_failed, total, "--max-failed", at_least=0)
        return 0 if self.staged else None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RolloutPlan":
        return cls(**{**d, "waves": tuple(d.get("waves") or ())})


def batches(n: int, plan: RolloutPlan) -> list[int]:
    """Batch sizes for ``n`` devices: Ansible's ``serial`` rule (see the module docstring)."""
    sizes = [of_fleet(str(s), n, "--waves") for s in plan.serial()]
    out, left = [], n
    i = 0
    while left > 0:
        size = min(sizes[min(i, len(sizes) - 1)], left)
        out.append(size)
        left -= size
        i += 1
    return out


@dataclass
class DeviceOutcome:
    """One device's line in the rollout table and state file."""

    host: str
    batch: int | None = None
    status: str = "pending"  # pending, deployed, already, failed, rolled-back, refused, soak-failed, halted-back, skipped
    reason: str = ""
    previous: str | None = None
    running: str | None = None
    seconds: float | None = None
    soak: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    @property
    def done(self) -> bool:
        return self.status in ("deployed", "already")


@dataclass
class RolloutResult:
    """What happened: per device, whether the rollout completed, and why it halted."""

    version: str
    completed: bool
    halted: str | None
    devices: list[DeviceOutcome]
    state_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.completed and not any(d.failed for d in self.devices)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "version": self.version, "completed": self.completed, "halted": self.halted,
                "state": self.state_path, "devices": [asdict(d) for d in self.devices]}


def host_record(h: HostSpec) -> dict[str, Any]:
    return {"user": h.user, "host": h.host, "port": h.port, "device_root": h.device_root, "http_port": h.http_port,
            "name": h.name, "groups": list(h.groups), "env": list(h.env)}


def host_from_record(d: dict[str, Any]) -> HostSpec:
    return HostSpec(d["user"], d["host"], d.get("port"), d.get("device_root"), d.get("http_port"), d.get("name"),
                    tuple(d.get("groups") or ()), tuple(d.get("env") or ()))


class _State:
    """The state file: written atomically (temp file + rename) after every change, under a lock."""

    def __init__(self, path: Path | None, head: dict[str, Any], outcomes: list[DeviceOutcome]) -> None:
        self.path, self.head, self.outcomes = path, head, outcomes
        self.lock = threading.Lock()

    def save(self) -> None:
        if self.path is None:
            return
        with self.lock:
            data = {**self.head, "devices": [asdict(o) for o in self.outcomes]}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)


def soak_problem(before: dict[str, Any], now: dict[str, Any], version: str, max_slowdown: float | None) -> str | None:
    """Why a canary failed its soak, from the agent's status before the flash and after the soak (None: it passed).
    Both engines judge with this."""
    if not now.get("ok", True) and now.get("reason"):
        return f"status after the soak failed: {now['reason']}"
    if now.get("current") != version:
        return f"after the soak the device runs {now.get('current')}, not {version}"
    if not now.get("healthy"):
        return f"not healthy after the soak ({now.get('health_reason') or 'no answer'})"
    if int(now.get("restarts") or 0) > 0:
        return f"the runtime restarted {now['restarts']} time(s) during the soak"
    if not now.get("frames_processed"):
        return "no frame processed during the soak"
    old, new = before.get("infer_ms"), now.get("infer_ms")
    if max_slowdown is not None and old and new and new > old * (1 + max_slowdown / 100.0):
        return (f"inference {new:.2f} ms vs {old:.2f} ms on the previous release: {100 * (new / old - 1):.0f}% slower, "
                f"more than --max-slowdown {max_slowdown:g}%")
    return None


def soak_record(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """What the table and state file keep of a canary's soak."""
    out = {k: now.get(k) for k in ("current", "healthy", "frames_processed", "restarts", "infer_ms", "health_reason")}
    return {**out, "infer_ms_before": before.get("infer_ms")}


def roll_out(bundle: str | os.PathLike, hosts: Sequence[HostSpec], plan: RolloutPlan, *, ssh: SSHOptions | None = None,
             options: FlashOptions | None = None, parallel: int = 4, state_path: str | os.PathLike | None = None,
             on_event: Callable[[str], None] | None = None, _outcomes: list[DeviceOutcome] | None = None,
             flash: Callable[..., FlashResult] = flash_host,
             status: Callable[[HostSpec], dict[str, Any]] | None = None,
             rollback: Callable[[HostSpec, str | None], dict[str, Any]] | None = None) -> RolloutResult:
    """Flash ``bundle`` to ``hosts`` in batches with a failure budget (see the module docstring).

    ``flash``, ``status`` and ``rollback`` are the per-device steps (by default the SSH ones:
    :func:`~.flash.flash_host` and the agent's ``status`` and ``rollback``)."""
    from .fleet import device_call

    options = options or FlashOptions()
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, got {parallel}")
    meta = read_release(bundle)  # a truncated or corrupt bundle stops here, before any device is touched
    version = meta["version"]
    say = on_event or (lambda _m: None)
    status = status or (lambda h: _safe(lambda: device_call(h, "status", ssh=ssh, options=options)))
    rollback = rollback or (lambda h, v: _safe(lambda: device_call(h, "rollback", ssh=ssh, options=options, version=v,
                                                                  timeout=options.health_timeout)))
    outcomes = _outcomes or [DeviceOutcome(h.label) for h in hosts]
    head = {"state_version": STATE_VERSION, "bundle": str(Path(bundle).resolve()), "sha256": sha256_file(bundle),
            "version": version, "plan": asdict(plan), "parallel": parallel, "hosts": [host_record(h) for h in hosts],
            "ssh": asdict(ssh) if ssh else None, "options": asdict(options), "halted": None, "completed": False}
    state = _State(Path(state_path) if state_path else None, head, outcomes)
    state.save()
    budget = plan.budget(len(hosts))
    halted: list[str] = []
    lock = threading.Lock()

    def failures() -> int:
        return sum(o.failed for o in outcomes)

    def one(i: int, batch: int, soak_before: dict[str, dict]) -> None:
        h, o = hosts[i], outcomes[i]
        if halted:
            o.status, o.reason = "skipped", f"the rollout halted: {halted[0]}"
            state.save()
            return
        o.batch = batch
        t = time.monotonic()
        r = flash(bundle, h, ssh=ssh, options=options, meta=meta)
        o.status, o.reason, o.previous, o.running = r.status, r.reason, r.previous, r.running
        o.seconds, o.warnings = round(time.monotonic() - t, 1), list(r.warnings)
        say(f"{o.host}: {o.status}" + (f" ({o.reason})" if o.reason else ""))
        for w in r.warnings:
            say(f"{o.host}: warning: {w}")
        with lock:
            if budget is not None and failures() > budget and not halted:
                halted.append(f"{failures()} device(s) failed, more than --max-failed allows ({budget})")
        state.save()

    sizes = batches(len(hosts), plan)
    todo = [i for i, o in enumerate(outcomes) if not o.done]
    start = 0
    for b, size in enumerate(sizes, 1):
        idx = list(range(start, start + size))
        start += size
        pending = [i for i in idx if i in todo]
        if not pending:
            continue
        if halted:
            break
        is_canary = plan.canary and b == 1
        soak_before = {hosts[i].label: status(hosts[i]) for i in pending} if is_canary and plan.max_slowdown is not None else {}
        say(f"batch {b}/{len(sizes)}{' (canary)' if is_canary else ''}: {', '.join(outcomes[i].host for i in pending)}")
        with ThreadPoolExecutor(max_workers=min(parallel, len(pending))) as pool:
            list(pool.map(lambda i: one(i, b, soak_before), pending))
        if is_canary and (plan.soak_s or plan.max_slowdown is not None) and not halted:
            deployed = [i for i in pending if outcomes[i].status == "deployed"]
            if deployed:
                say(f"canary: soaking {plan.soak_s:g} s")
                time.sleep(plan.soak_s)
            for i in deployed:
                before, now = soak_before.get(hosts[i].label, {}), status(hosts[i])
                outcomes[i].soak = soak_record(before, now)
                why = soak_problem(before, now, version, plan.max_slowdown)
                if why:
                    back = rollback(hosts[i], outcomes[i].previous)
                    outcomes[i].status = "soak-failed"
                    outcomes[i].running = back.get("version") if back.get("ok") else None
                    outcomes[i].reason = why + (f"; rolled back to {back.get('version')}" if back.get("ok")
                                                else f"; rollback: {back.get('reason')}")
                    say(f"{outcomes[i].host}: soak-failed ({outcomes[i].reason})")
            if budget is not None and failures() > budget and not halted:
                halted.append(f"{failures()} device(s) failed, more than --max-failed allows ({budget})")
            state.save()
        if halted and plan.rollback_on_halt:
            for i in pending:
                if outcomes[i].status == "deployed":
                    back = rollback(hosts[i], outcomes[i].previous)
                    outcomes[i].status = "halted-back"
                    outcomes[i].running = back.get("version") if back.get("ok") else None
                    outcomes[i].reason = (f"the rollout halted in its batch; back on {back.get('version')}" if back.get("ok")
                                          else f"the rollout halted in its batch; rollback failed: {back.get('reason')}")
                    say(f"{outcomes[i].host}: {outcomes[i].status} ({outcomes[i].reason})")
            state.save()
    for o in outcomes:
        if o.status == "pending":
            o.status, o.reason = "skipped", f"the rollout halted: {halted[0]}" if halted else "not reached"
    head["halted"] = halted[0] if halted else None
    head["completed"] = not halted and all(o.done or o.failed for o in outcomes)
    state.save()
    return RolloutResult(version, head["completed"], head["halted"], outcomes, str(state_path) if state_path else None)


def _safe(call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    from ..errors import DeployError

    try:
        return call()
    except DeployError as e:
        return {"ok": False, "reason": str(e)}


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    """A rollout state file, checked (one-line errors naming the file)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read rollout state {p}: {getattr(e, 'strerror', None) or e}") from None
    except ValueError as e:
        raise InputError(f"rollout state {p} is not JSON ({e}): expected the file a staged flash wrote") from None
    if not isinstance(data, dict) or data.get("state_version") != STATE_VERSION or "hosts" not in data:
        raise InputError(f"rollout state {p} is not a state file of this edgeship (state_version {STATE_VERSION})")
    return data


def resume(path: str | os.PathLike, *, on_event: Callable[[str], None] | None = None,
           status: Callable[[HostSpec], dict[str, Any]] | None = None, **steps: Any) -> RolloutResult:
    """Finish the rollout a state file describes: devices already on the new release are not flashed
    again (each unfinished device is asked what it runs); failed and skipped ones get a fresh budget."""
    from .fleet import device_call

    data = load_state(path)
    bundle = Path(data["bundle"])
    if not bundle.is_file():
        raise InputError(f"rollout state {path}: its bundle {bundle} is gone: expected the file the rollout started with")
    if sha256_file(bundle) != data["sha256"]:
        raise InputError(f"rollout state {path}: {bundle} changed since the rollout started (its SHA-256 differs)")
    hosts = [host_from_record(h) for h in data["hosts"]]
    ssh = SSHOptions(**data["ssh"]) if data.get("ssh") else None
    options = FlashOptions(**{**data["options"], "env": tuple(data["options"].get("env") or ())})
    status = status or (lambda h: _safe(lambda: device_call(h, "status", ssh=ssh, options=options)))
    outcomes = []
    for h, d in zip(hosts, data["devices"]):
        o = DeviceOutcome(**d)
        if not o.done:
            now = status(h)
            if now.get("current") == data["version"] and now.get("healthy"):
                o.status, o.reason, o.running = "already", "already on the new release and healthy", data["version"]
            else:
                o.status, o.reason = "pending", ""
        outcomes.append(o)
        if on_event and o.status == "already":
            on_event(f"{o.host}: already on {data['version']}")
    plan = RolloutPlan.from_dict(data["plan"])
    return roll_out(bundle, hosts, plan, ssh=ssh, options=options, parallel=int(data.get("parallel") or 4),
                    state_path=path, on_event=on_event, _outcomes=outcomes, status=status, **steps)
