"""Hosts files: a plain list, an Ansible INI inventory or an Ansible YAML inventory; groups, variables, --limit.

The same file drives ``edgeship flash`` and ``edgeship flash --engine ansible``, so the forms are the
ones Ansible users already keep:

    # plain: one device per line
    pi@10.0.0.21 device_root=/opt/edgeship http_port=8080

    # INI: [group] sections, [group:vars], hosts as USER@HOST[:PORT] or an alias with ansible_host
    [line3]
    cam1 ansible_host=10.0.0.21 ansible_user=pi
    pi@10.0.0.22:2222 edgeship_env="CAMERA=rtsp://10.0.0.50/s1"
    [line3:vars]
    http_port=8080

    # YAML (a file ending in .yml/.yaml): all -> children -> GROUP -> hosts / vars
    all:
      children:
        line3:
          hosts:
            cam1: {ansible_host: 10.0.0.21, ansible_user: pi, edgeship_env: {CAMERA: rtsp://10.0.0.50/s1}}
          vars: {http_port: 8080}

Variables edgeship reads (group variables first, host variables over them): ``ansible_host``,
``ansible_user``, ``ansible_port`` (or ``port``), ``device_root``, ``http_port`` and ``edgeship_env``
(variables for the service's environment: a mapping, or ``KEY=VALUE`` items separated by commas).
Other variables are kept for Ansible and ignored by edgeship's own engine.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import InputError
from .remote import HostSpec, device_root_value, parse_host, port_value

YAML_SUFFIXES = (".yml", ".yaml")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SECTION = re.compile(r"^\[(?P<group>[A-Za-z0-9_.-]+)(?::(?P<kind>vars|children))?\]$")


def env_items(value: Any, where: str) -> tuple[str, ...]:
    """``edgeship_env`` as ``KEY=VALUE`` items (a mapping, a list, or a comma-separated text)."""
    if isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = [p.strip() for p in str(value).split(",") if p.strip()]
    for kv in items:
        key, sep, val = kv.partition("=")
        if not sep or not ENV_KEY.match(key) or "\n" in val or "\0" in val:
            raise InputError(f"{where}: edgeship_env takes KEY=VALUE items (a variable name, one line), got {kv!r}")
    return tuple(items)


def make_host(name: str, variables: dict[str, Any], groups: Sequence[str], where: str) -> HostSpec:
    """A device from its inventory name (``USER@HOST[:PORT]`` or an alias) and its merged variables."""
    v = dict(variables)
    if "@" in name:
        spec = parse_host(name)
    else:
        if not _ALIAS.match(name):
            raise InputError(f"{where}: expected USER@HOST[:PORT] or an alias with ansible_host, got {name!r}")
        if "ansible_user" not in v:
            raise InputError(f"{where}: host {name} needs ansible_user (or write it as USER@HOST)")
        address = str(v.get("ansible_host", name))
        spec = parse_host(f"{v['ansible_user']}@{address}")
    port = v.get("ansible_port", v.get("port"))
    return HostSpec(
        user=spec.user,
        host=spec.host,
        port=port_value(str(port), f"{where}: port") if port is not None else spec.port,
        device_root=device_root_value(str(v["device_root"]), f"{where}: device_root") if "device_root" in v else None,
        http_port=port_value(str(v["http_port"]), f"{where}: http_port") if "http_port" in v else None,
        name=name,
        groups=tuple(groups),
        env=env_items(v["edgeship_env"], where) if "edgeship_env" in v else (),
        vars={k: x for k, x in v.items()},
    )


def _ini_value(text: str) -> Any:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _parse_ini(path: Path, lines: list[str]) -> list[HostSpec]:
    hosts: dict[str, tuple[dict[str, Any], list[str], str]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    children: dict[str, list[str]] = {}
    group, kind = "ungrouped", None
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        m = _SECTION.match(stripped)
        if m:
            group, kind = m["group"], m["kind"]
            continue
        try:
            words = shlex.split(stripped, comments=True)
        except ValueError as e:
            raise InputError(f"{where}: {e}: expected HOST [key=value ...]") from None
        if not words:
            continue
        if kind == "vars":
            key, sep, value = stripped.partition("=")
            if not sep:
                raise InputError(f"{where}: expected key=value in [{group}:vars], got {stripped!r}")
            group_vars.setdefault(group, {})[key.strip()] = _ini_value(value.strip())
            continue
        if kind == "children":
            children.setdefault(group, []).append(words[0])
            continue
        own: dict[str, Any] = {}
        for w in words[1:]:
            key, sep, value = w.partition("=")
            if not sep or not key:
                raise InputError(f"{where}: expected key=value after the host, got {w!r}")
            own[key] = value
        name = words[0]
        # an alias named twice is one host (Ansible's rule); USER@HOST lines with different device roots are
        # several devices behind one login
        key = name if "@" not in name else f"{name} {own.get('device_root', '')}"
        prev = hosts.get(key)
        merged = {**(prev[0] if prev else {}), **own}
        groups = (prev[1] if prev else []) + ([group] if group != "ungrouped" else [])
        hosts[key] = (merged, groups, prev[2] if prev else where)
    parents: dict[str, list[str]] = {}
    for parent, kids in children.items():
        for kid in kids:
            parents.setdefault(kid, []).append(parent)
    out = []
    for key, (own, groups, where) in hosts.items():
        name = key.split(" ", 1)[0]
        all_groups = _with_parents(groups, parents)
        variables = {**group_vars.get("all", {})}
        for g in all_groups:
            variables.update(group_vars.get(g, {}))
        variables.update(own)
        out.append(make_host(name, variables, all_groups, where))
    return out


def _with_parents(groups: Iterable[str], parents: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    todo = list(groups)
    while todo:
        g = todo.pop(0)
        if g not in out:
            out.append(g)
            todo += parents.get(g, [])
    return out


def _parse_yaml(path: Path, text: str) -> list[HostSpec]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected an Ansible YAML inventory (all: hosts/children/vars), got {type(data).__name__}")
    found: dict[str, tuple[dict[str, Any], list[str]]] = {}

    def walk(name: str, node: Any, inherited: dict[str, Any], groups: list[str], where: str) -> None:
        if node is None:
            return
        if not isinstance(node, dict):
            raise InputError(f"{path}: {where}: expected a mapping with hosts, children or vars")
        unknown = set(node) - {"hosts", "children", "vars"}
        if unknown:
            raise InputError(f"{path}: {where}: unknown key {sorted(unknown)[0]!r} (expected hosts, children or vars)")
        variables = {**inherited, **(node.get("vars") or {})}
        mine = groups + ([name] if name != "all" else [])
        for host, own in (node.get("hosts") or {}).items():
            if own is not None and not isinstance(own, dict):
                raise InputError(f"{path}: {where}.hosts.{host}: expected a mapping of variables")
            prev = found.get(str(host))
            merged = {**(prev[0] if prev else {}), **variables, **(own or {})}
            found[str(host)] = (merged, (prev[1] if prev else []) + [g for g in mine if g not in (prev[1] if prev else [])])
        for child, sub in (node.get("children") or {}).items():
            walk(str(child), sub, variables, mine, f"{where}.children.{child}")

    for top, node in data.items():
        walk(str(top), node, {}, [], str(top))
    return [make_host(name, v, groups, f"{path}: host {name}") for name, (v, groups) in found.items()]


def parse_hosts_file(path: str | os.PathLike) -> list[HostSpec]:
    """Every device of a hosts file (plain list, INI or YAML inventory), in file order."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read hosts file {path}: {getattr(e, 'strerror', None) or e}") from e
    hosts = _parse_yaml(path, text) if path.suffix.lower() in YAML_SUFFIXES else _parse_ini(path, text.splitlines())
    if not hosts:
        raise InputError(f"hosts file {path} lists no hosts")
    return hosts


def select(hosts: Sequence[HostSpec], limit: str | None) -> list[HostSpec]:
    """``--limit GROUP|HOST[,...]`` as Ansible reads it: a group name, an inventory name, a USER@HOST
    label or an address; ``!NAME`` excludes. Refused when it matches nothing."""
    if not limit:
        return list(hosts)
    words = [w.strip() for w in limit.replace(":", ",").split(",") if w.strip()]
    take = [w for w in words if not w.startswith("!")]
    drop = [w[1:] for w in words if w.startswith("!")]

    def matches(h: HostSpec, w: str) -> bool:
        return w == "all" or w in h.groups or w in (h.name, h.label, h.host, h.destination)

    out = [h for h in hosts if (not take or any(matches(h, w) for w in take)) and not any(matches(h, w) for w in drop)]
    if not out:
        known = sorted({g for h in hosts for g in h.groups})
        raise InputError(f"--limit {limit!r} matches no device (groups: {', '.join(known) or 'none'}; "
                         f"hosts: {', '.join(h.name or h.label for h in hosts[:5])}{'...' if len(hosts) > 5 else ''})")
    return out
