#!/usr/bin/env bash
# Debian packages the tests use as real peers: OpenSSH server and sudo (flash), mosquitto (MQTT),
# chromium (dashboard), GStreamer RTSP server (RTSP camera),
# python3-opencv (gst: sources through the system OpenCV), and the emulated Raspberry Pi
# (qemu-user-static, binfmt-support, debootstrap, iproute2: tests/helpers/pi.py). Installed only when missing.
set -uo pipefail
want=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || want+=(openssh-server)
command -v ssh >/dev/null 2>&1 || want+=(openssh-client)
command -v sudo >/dev/null 2>&1 || want+=(sudo)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || want+=(mosquitto)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer','1.0')" >/dev/null 2>&1 || \
  want+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-tools)
# Debian's OpenCV (built with GStreamer) for Debian's python3: the system-OpenCV flash test
/usr/bin/python3 -c "import cv2" >/dev/null 2>&1 || want+=(python3-opencv)
# the emulated Raspberry Pi: arm64 Debian under QEMU user-mode, in a network namespace of its own
[ -x /usr/bin/qemu-aarch64-static ] || want+=(qemu-user-static binfmt-support)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || want+=(debootstrap)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || want+=(iproute2)
if [ ${#want[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${want[*]} and not root; tests that need them will be skipped" >&2
  exit 0
fi
echo "system-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null 2>&1 || \
  echo "system-deps: apt-get install failed for ${want[*]}" >&2
exit 0
