"""The systemd unit that runs a release on the device (``DEVICE_ROOT/current/run.sh``).

The unit names only ``DEVICE_ROOT/current``, so switching releases never edits it: flash switches
the symlink and restarts the service. The bundle carries the template with ``@DEVICE_ROOT@``; the
device agent fills it in for the device root chosen at flash time.
"""

from __future__ import annotations

from typing import Any

UNIT_TEMPLATE = """\
[Unit]
Description=edgeship camera inference ({target}: {artifact})
Documentation=https://github.com/edgeship/edgeship
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=20

[Service]
Type=simple
User={user}
Group={group}
SupplementaryGroups={groups}
WorkingDirectory=@DEVICE_ROOT@/data
Environment=PYTHONUNBUFFERED=1
Environment=EDGESHIP_PROGRESS=0
Environment=EDGESHIP_DEVICE_ROOT=@DEVICE_ROOT@
EnvironmentFile=-@DEVICE_ROOT@/device.env
ExecStart=/bin/sh @DEVICE_ROOT@/current/run.sh
Restart=always
RestartSec={restart_sec}
TimeoutStopSec=20
KillMode=mixed
Nice={nice}
CPUWeight={cpu_weight}
{memory_line}NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=@DEVICE_ROOT@/data @DEVICE_ROOT@/logs

[Install]
WantedBy=multi-user.target
"""


def unit_template(service: dict[str, Any], *, target: str, artifact: str) -> str:
    """The unit text with ``@DEVICE_ROOT@`` left for the device agent to fill in."""
    memory = service.get("memory_max")
    return UNIT_TEMPLATE.format(
        target=target,
        artifact=artifact,
        user=service.get("user", "edgeship"),
        group=service.get("group", service.get("user", "edgeship")),
        groups=" ".join(service.get("supplementary_groups", ["video"])),
        restart_sec=service.get("restart_sec", 3),
        nice=service.get("nice", 0),
        cpu_weight=service.get("cpu_weight", 100),
        memory_line=f"MemoryMax={memory}\n" if memory else "",
    )


def render_unit(template: str, device_root: str) -> str:
    """Fill in the device root (what the agent does on the device)."""
    return template.replace("@DEVICE_ROOT@", device_root.rstrip("/") or "/")
