"""A real mosquitto broker on a free 127.0.0.1 port, started and stopped by the test.

    with Mosquitto(tmp_path) as broker:
        with Subscriber(broker.port, "edgeship/#") as sub:
            ...                      # publish something
            msgs = sub.wait(2)       # [(topic, payload bytes)]

``Mosquitto(tmp, tls=(cert, key))`` adds a TLS listener on ``broker.tls_port`` (TLS 1.2+) next to the
plain one, so a plain test subscriber sees what a client sent over TLS; ``client_ca=PEM`` makes that
listener require a client certificate signed by it.

``Mosquitto(tmp, persistent=True)`` keeps sessions and queued messages across ``stop()`` /
``start()`` on the same port (mosquitto's persistence file, saved on SIGTERM), so a
``Subscriber(port, topic, client_id="x", clean_session=False)`` misses nothing published while it
was cut off: what tests of a broker outage need to count messages reliably.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from pathlib import Path

from .mjpeg import free_port, wait_port


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None, *, persistent: bool = False,
                 tls: tuple[Path, Path] | None = None, client_ca: Path | None = None) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.persistent = persistent
        self.tls, self.client_ca = tls, client_ca
        self.tls_port = free_port() if tls else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (scripts/system-deps.sh installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        # run as root, mosquitto drops to user "mosquitto", which cannot write its database here
        persistence = (f"persistence true\npersistence_location {self.workdir}/\n"
                       f"persistence_file mosquitto-{self.port}.db\nuser {getpass.getuser()}\n"
                       ) if self.persistent else "persistence false\n"
        if self.tls and not self.persistent:  # mosquitto drops to user "mosquitto", which cannot read the key here
            persistence += f"user {getpass.getuser()}\n"
        listeners = f"per_listener_settings false\nlistener {self.port} 127.0.0.1\n"
        if self.tls:
            listeners += (f"listener {self.tls_port} 127.0.0.1\ncertfile {self.tls[0]}\nkeyfile {self.tls[1]}\n"
                          "tls_version tlsv1.2\n")
            if self.client_ca:
                listeners += f"cafile {self.client_ca}\nrequire_certificate true\n"
        conf.write_text(f"{listeners}allow_anonymous true\n{persistence}")
        self.log = open(self.workdir / f"mosquitto-{self.port}.log", "ab")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=10)
        if self.tls_port:
            wait_port(self.tls_port, timeout=10)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "log", None) is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Subscriber:
    """A paho client that records every message on ``topic`` (wildcards allowed)."""

    def __init__(self, port: int, topic: str, host: str = "127.0.0.1", *, client_id: str = "",
                 clean_session: bool = True) -> None:
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=1)  # back quickly after a broker restart
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError(f"could not subscribe to {topic} on {host}:{port}")

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float = 10.0) -> list[tuple[str, bytes]]:
        """Block until ``count`` messages arrived (or timeout); return all received so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            return list(self.messages)

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
