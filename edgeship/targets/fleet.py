"""Many devices at once: flash in a bounded thread pool; status, logs and rollback per device."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from ..errors import DeployError, InputError
from .bundle import read_release
from .flash import FlashOptions, FlashResult, agent_args, flash_host, uses_sudo
from .inventory import parse_hosts_file, select
from .remote import HostSpec, Remote, SSHOptions, parse_host


def collect_hosts(hosts: Sequence[str] = (), hosts_file: str | os.PathLike | None = None,
                  limit: str | None = None) -> list[HostSpec]:
    """``--host`` values plus the devices of ``--hosts FILE`` (narrowed by ``--limit``), without duplicates
    (same user, host, port, root)."""
    specs = [parse_host(h) for h in hosts]
    if hosts_file:
        specs += parse_hosts_file(hosts_file)
    if not specs:
        raise InputError("no device given: pass --host USER@HOST (repeatable) or --hosts FILE")
    specs = select(specs, limit)
    seen, out = set(), []
    for s in specs:
        key = (s.user, s.host, s.port, s.device_root)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def flash_many(bundle: str | os.PathLike, hosts: Sequence[HostSpec], *, ssh: SSHOptions | None = None,
               options: FlashOptions | None = None, parallel: int = 4,
               on_done: Callable[[FlashResult], None] | None = None) -> list[FlashResult]:
    """Flash ``bundle`` to every host, at most ``parallel`` at a time; results in the hosts' order."""
    if parallel < 1:
        raise InputError(f"--parallel must be at least 1, got {parallel}")
    meta = read_release(bundle)  # a truncated or corrupt bundle stops here, before any device is touched

    def one(host: HostSpec) -> FlashResult:
        r = flash_host(bundle, host, ssh=ssh, options=options, meta=meta)
        if on_done:
            on_done(r)
        return r

    with ThreadPoolExecutor(max_workers=min(parallel, len(hosts))) as pool:
        return list(pool.map(one, hosts))


def device_call(host: HostSpec, command: str, *, ssh: SSHOptions | None = None, options: FlashOptions | None = None,
                **kwargs: Any) -> dict[str, Any]:
    """Run one agent command (status, logs, rollback) on a device and return its answer.

    ``options.sudo`` runs it under ``sudo -n`` (see :class:`FlashOptions`); a sudo that wants a
    password raises :class:`~edgeship.targets.remote.SudoRefused` (``device_many`` reports it).
    """
    options = options or FlashOptions()
    args = agent_args(host, options)
    for key, value in kwargs.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    with Remote(host, ssh, sudo=uses_sudo(host, options)) as remote:
        answer = remote.agent(options.python, command, *args)
    answer["host"] = host.label
    return answer


def follow_logs(host: HostSpec, on_text: Callable[[str], None], *, ssh: SSHOptions | None = None,
                options: FlashOptions | None = None, lines: int = 100, seconds: float | None = None) -> None:
    """Print a device's service log as it grows (``device logs --follow``): the last ``lines``, then
    every new line handed to ``on_text``, until ``seconds`` pass (default: until interrupted)."""
    options = options or FlashOptions()
    args = [*agent_args(host, options), "--follow", "--lines", str(lines), "--timeout", str(seconds or 0)]
    with Remote(host, ssh, sudo=uses_sudo(host, options)) as remote:
        remote.agent_stream(options.python, "logs", *args, on_text=on_text)


def device_many(hosts: Sequence[HostSpec], command: str, *, parallel: int = 4, **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`device_call` on every host; a host that cannot be reached answers ``ok: false`` with the reason."""

    def one(host: HostSpec) -> dict[str, Any]:
        try:
            return device_call(host, command, **kwargs)
        except DeployError as e:
            return {"ok": False, "host": host.label, "reason": str(e)}

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def release_agreement(answers: list[dict[str, Any]], expect: str | None = None) -> list[dict[str, Any]]:
    """Mark each device's status answer with ``agrees`` (runs the fleet's release) and ``newest``: ``expect``,
    else the newest release installed on any device. A device that is behind, or not healthy, is not ``ok``."""
    newest = expect
    if newest is None:
        installed = [(a.get("installed_at") or 0.0, a["current"]) for a in answers if a.get("ok") and a.get("current")]
        newest = max(installed)[1] if installed else None
    out = []
    for a in answers:
        a = dict(a)
        if a.get("ok") and newest is not None:
            a["newest"], a["agrees"] = newest, a.get("current") == newest
            if not a["agrees"]:
                a["ok"], a["reason"] = False, a.get("reason") or f"runs {a.get('current')}, the fleet's newest is {newest}"
            elif a.get("running") and a.get("healthy") is False:
                a["ok"], a["reason"] = False, a.get("reason") or f"not healthy: {a.get('health_reason')}"
        out.append(a)
    return out
