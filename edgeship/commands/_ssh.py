"""Options shared by ``edgeship flash`` and ``edgeship device``: which devices, how to reach them."""

from __future__ import annotations

from typing import Any, Callable

import click

from ..targets.flash import INITS


def ssh_options(f: Callable) -> Callable:
    """Add --host/--hosts/--port/--identity/--known-hosts/--accept-new-host-key/--device-root/--init/... to a command."""
    options = [
        click.option("--host", "hosts", multiple=True, metavar="USER@HOST[:PORT]", help="Device to act on (repeatable)."),
        click.option("--hosts", "hosts_file", type=click.Path(exists=True, dir_okay=False),
                     help="Hosts file: one USER@HOST[:PORT] [device_root=DIR] [http_port=N] per line, or an Ansible "
                          "inventory (INI with [groups] and [group:vars], or .yml) with ansible_host/ansible_user/"
                          "ansible_port, device_root, http_port and edgeship_env (KEY=VALUE for the service) per host."),
        click.option("--limit", default=None, metavar="GROUP|HOST[,...]",
                     help="Only these devices of --hosts: group names, inventory names or USER@HOST; !NAME excludes."),
        click.option("--port", type=click.IntRange(1, 65535), help="SSH port for hosts that name none [22]."),
        click.option("--identity", type=click.Path(exists=True, dir_okay=False), help="SSH private key (key auth only; no passwords)."),
        click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to check host keys against [~/.ssh/known_hosts]."),
        click.option("--accept-new-host-key", is_flag=True, help="Trust and record a host key seen for the first time (a changed key is still refused)."),
        click.option("--device-root", default="/opt/edgeship", show_default=True, help="Where releases live on the device."),
        click.option("--init", "init", type=click.Choice(list(INITS)), default="auto", show_default=True,
                     help="Run the service with systemd, or (none) with edgeship's own pidfile supervisor; auto: "
                          "what the device was flashed with before, else systemd where it runs (as root), else none."),
        click.option("--service", default="edgeship", show_default=True, help="systemd unit name."),
        click.option("--sudo", is_flag=True,
                     help="Log in as a normal user and run the device steps under passwordless `sudo -n` "
                          "(releases root-owned; the runtime still runs unprivileged)."),
        click.option("--python", "python", default="python3", show_default=True, help="Python interpreter on the device."),
        click.option("--parallel", default=4, show_default=True, type=click.IntRange(min=1), help="Devices handled at once."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def build(kw: dict[str, Any], **flash_kw: Any):
    """(hosts, SSHOptions, FlashOptions) from the shared options in ``kw`` (consumed); ``hosts`` may
    be pre-extended with positional USER@HOST arguments."""
    from ..targets.fleet import collect_hosts
    from ..targets.flash import FlashOptions
    from ..targets.remote import SSHOptions

    hosts = collect_hosts(kw.pop("hosts"), kw.pop("hosts_file"), kw.pop("limit"))
    ssh = SSHOptions(identity=kw.pop("identity"), known_hosts=kw.pop("known_hosts"),
                     accept_new_host_key=kw.pop("accept_new_host_key"), port=kw.pop("port"))
    options = FlashOptions(device_root=kw.pop("device_root"), init=kw.pop("init"), service=kw.pop("service"),
                           python=kw.pop("python"), sudo=kw.pop("sudo"), **flash_kw)
    return hosts, ssh, options
