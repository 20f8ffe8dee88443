"""``edgeship targets list|show``: the built-in device profiles."""

from __future__ import annotations

import json

import click

from ._common import emit_json, format_table


@click.group()
def targets() -> None:
    """List and show device profiles (architecture, format, precision, runtime packages, cameras).

    \b
    Example:
      edgeship targets list
      edgeship targets show rpi5
      edgeship targets show intel-x86 --json
    """


@targets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def list_cmd(as_json: bool) -> None:
    """List every device profile.

    \b
    Example:
      edgeship targets list --json
    """
    from ..targets import list_targets

    profiles = list_targets()
    if as_json:
        emit_json({"targets": [p.to_dict() for p in profiles]})
        return
    rows = [(p.name, p.architecture, p.format, p.precision, p.threads or "auto", p.python,
             ",".join(p.formats), p.description) for p in profiles]
    click.echo(format_table(["target", "arch", "format", "precision", "threads", "python", "runtimes", "description"], rows))


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--python", "python", default=None, help="Show the runtime requirements for this Python (default: the target's).")
def show_cmd(name: str, as_json: bool, python: str | None) -> None:
    """Show one device profile: what it is, what it runs, what it installs.

    \b
    Example:
      edgeship targets show jetson-orin-nano
      edgeship targets show rpi4 --python 3.9
    """
    from ..targets import get_target

    p = get_target(name)
    py = python or p.python
    reqs = {fmt: p.requirements(py, fmt) for fmt in p.formats if p.supports_python(py, fmt)}
    if as_json:
        emit_json({**p.to_dict(), "requirements": {"python": py, **reqs}})
        return
    lines = [
        f"{p.name}: {p.description}",
        f"  architecture     {p.architecture} (glibc >= {p.glibc})",
        f"  artifact         {p.format} {p.precision} (runs: {', '.join(p.formats)})",
        f"  threads          {p.threads or 'auto'}   device {p.backend_device}",
        f"  python           {p.python} (supported: {', '.join(p.python_versions())})",
    ]
    for fmt, r in reqs.items():
        lines.append(f"  {fmt + ' runtime':<16} {' '.join(r)}  (Python {py})")
    for kind, template in sorted(p.camera.items()):
        if isinstance(template, str) and kind != "default":
            lines.append(f"  camera {kind:<9} {p.camera_source(kind)}")
    lines.append(f"  service          {json.dumps(p.service)}")
    click.echo("\n".join(lines))
