"""``edgeship ansible init DIR``: the playbook and role that run an edgeship rollout from Ansible."""

from __future__ import annotations

import click

from ._common import echo_err


@click.group()
def ansible() -> None:
    """Roll bundles out with Ansible: the same device agent and batches as `edgeship flash`.

    \b
    Example:
      edgeship ansible init deploy/
      ansible-playbook -i fleet.ini deploy/edgeship-rollout.yml -e edgeship_bundle=$PWD/line3.tar.gz \\
          -e '{"edgeship_serial": [1, "25%", "100%"], "edgeship_canary": 1, "edgeship_max_failed": 2}'
      edgeship flash line3.tar.gz --hosts fleet.ini --engine ansible --canary 1 --waves 25%,100%
    """


@ansible.command()
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite edgeship's files in DIR (nothing else there is touched).")
def init(out_dir: str, force: bool) -> None:
    """Write edgeship-rollout.yml, roles/edgeship_device and filter_plugins/edgeship.py into DIR.

    \b
    The role runs edgeship's device agent on each host (preflight, upload, verify and install,
    switch and health check, roll back, prune), with its arguments from the edgeship installed
    beside ansible-core (pip install 'edgeship[ansible]'), so it cannot drift from `edgeship
    flash`. Per host (inventory): ansible_user, ansible_host, ansible_port, device_root,
    http_port, edgeship_env. For the run (extra vars): edgeship_bundle (required),
    edgeship_serial (batches), edgeship_canary, edgeship_soak, edgeship_max_slowdown,
    edgeship_max_failed, edgeship_rollback_on_halt, edgeship_options (device_root, init,
    health_timeout, keep, python, service, venvs, sudo, env).
    """
    from ..targets.playbook import write_project

    for path in write_project(out_dir, force=force):
        echo_err(f"wrote {path}")
