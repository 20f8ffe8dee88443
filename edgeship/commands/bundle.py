"""``edgeship bundle``: pack an artifact, its deployment config and runtime for a target device."""

from __future__ import annotations

import click

from ..runtime.processing import TASKS

from ._common import echo_err, emit_json

EXAMPLES = """
\b
Example:
  edgeship bundle out/digits.int8.tflite --target rpi5 --source /dev/video0 --out digits-rpi5.tar.gz
  edgeship bundle model_int8.tflite --target rpi5 --config examples/security.yaml --wheels -o line3.tar.gz
  edgeship bundle m.tflite --target rpi5 --source device:/opt/edgeship/data/clip.mp4 -o replay.tar.gz
  edgeship bundle out/model.xml --target intel-x86 --config deploy.yaml --wheels --out line3.tar.gz
  edgeship bundle m.tflite --target generic-x86_64 --source rtsp://10.0.0.7/s --wheels --wheelhouse ./mirror --out b.tar.gz
  edgeship bundle m.tflite --target rpi5 --source 'gst:libcamerasrc ! videoconvert ! video/x-raw,format=BGR ! appsink' --out cam.tar.gz
  edgeship bundle m.tflite --target jetson-orin-nano --source /dev/video0 --no-system-opencv --out usb.tar.gz
"""


@click.command(epilog=EXAMPLES)
@click.argument("artifact", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", "target", required=True, help="Device profile (see `edgeship targets list`).")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), help="Deployment config (deploy.yaml) the service runs.")
@click.option("--source", help="Camera/stream/video the service reads, when there is no --config (e.g. /dev/video0). "
                                "A video or image folder on this machine is packed into the bundle (and looped like a "
                                "camera); device:PATH names a file that is only on the device.")
@click.option("--task", type=click.Choice(list(TASKS)), help="Task for --source bundles [from the manifest].")
@click.option("--http-port", type=click.IntRange(1, 65535), help="Port of the runtime's HTTP server used for /health [target's, 8080].")
@click.option("--wheels", is_flag=True, help="Include every runtime wheel for the target's platform and Python (offline install).")
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False), help="With --wheels: take wheels from this folder, not PyPI.")
@click.option("--python", "python", help="With --wheels: the device's Python version, e.g. 3.11 [the target's stock Python].")
@click.option("--run-arg", "run_args", multiple=True, metavar="ARG",
              help="Extra argument for the service's `edgeship run` (repeatable), e.g. --run-arg=--threads --run-arg=4.")
@click.option("--system-opencv/--no-system-opencv", "system_opencv", default=None,
              help="Use the device's system OpenCV (apt python3-opencv / JetPack, built with GStreamer) instead of "
                   "pip's opencv-python-headless: the device venv gets --system-site-packages [on for Jetson "
                   "profiles and gst: sources].")
@click.option("--version", "version", help="Release name [artifact name + content hash].")
@click.option("--edgeship-wheel", type=click.Path(exists=True, dir_okay=False), help="Ship this edgeship wheel instead of building one.")
@click.option("--out", "-o", "out", required=True, type=click.Path(dir_okay=False), help="Output .tar.gz (written atomically).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bundle(artifact, target, config, source, task, http_port, wheels, wheelhouse, python, run_args, system_opencv, version,
           edgeship_wheel, out, as_json) -> None:
    """Pack ARTIFACT for a device: model + manifest, deployment config, systemd unit, runtime
    requirements (and with --wheels the wheels themselves), edgeship's own wheel and SHA256SUMS.

    The same inputs give the same bytes. Flash it with `edgeship flash BUNDLE --host USER@HOST`.

    \b
    Paths in a deploy config: the artifact, labels and a source that is a file or image folder on
    this machine travel in the bundle (a clip loops at its frame rate unless the config says
    otherwise); `device:/opt/edgeship/data/clip.mp4` is a file only on the device (checked by
    the flash preflight); relative outputs (sinks, events, queues, snapshots, counters) are
    written under DEVICE_ROOT/data on the device, which a release prune never touches.

    GStreamer cameras (`gst:` sources: Jetson CSI, Pi libcamera) need the device's system OpenCV:
    with --system-opencv pip's OpenCV is left out, the venv is built from the device's system
    Python with --system-site-packages (NumPy kept at the major that cv2 was built for), and the
    flash preflight refuses a device Python without cv2.
    """
    from ..targets.bundle import build_bundle

    if (wheelhouse or python) and not wheels:
        raise click.UsageError("--wheelhouse and --python only apply with --wheels")
    r = build_bundle(artifact, target, out, config=config, source=source, task=task, wheels=wheels, wheelhouse=wheelhouse,
                     python=python, version=version, http_port=http_port, edgeship_wheel=edgeship_wheel,
                     run_args=run_args, system_opencv=system_opencv)
    if as_json:
        emit_json(r.to_dict())
        return
    echo_err(f"wrote {r.path} ({r.size / 2**20:.1f} MiB, {len(r.files)} files, {len(r.wheels)} wheels) "
             f"release {r.version} for {r.target}" + ("; uses the device's system OpenCV" if r.system_opencv else "")
             + f"; sha256 {r.sha256}")
    click.echo(str(r.path))
