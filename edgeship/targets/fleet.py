"""Many devices at once: flash in a bounded thread pool; status, logs and rollback per device."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from ..errors import DeployError, InputError
from .bundle import read_release
from .flash import FlashOptions, FlashResult, agent_args, flash_host, uses_sudo
from .remote import HostSpec, Remote, SSHOptions, parse_host, parse_hosts_file


def collect_hosts(hosts: Sequence[str] = (), hosts_file: str | os.PathLike | None = None) -> list[HostSpec]:
    """``--host`` values plus the lines of ``--hosts FILE``, without duplicates (same user, host, port, root)."""
    specs = [parse_host(h) for h in hosts]
    if hosts_file:
        specs += parse_hosts_file(hosts_file)
    if not specs:
        raise InputError("no device given: pass --host USER@HOST (repeatable) or --hosts FILE")
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
