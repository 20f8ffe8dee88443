"""A small paho-mqtt (2.x) client wrapper shared by event sinks, reject outputs and triggers.

Connects in the background (``connect_async`` + ``loop_start``), reconnects with exponential backoff
(``reconnect_min_s`` doubling up to ``reconnect_max_s``) when the broker goes away, and
re-subscribes after every reconnect. QoS 1 messages published while the broker is down are queued
by paho **in memory** and sent after the reconnect; they are lost if the process ends first. For
messages that must survive a restart, put them in an :class:`~.outbox.Outbox` first (the MQTT event
sink does, see :mod:`.events`) and delete them once :meth:`MqttClient.publish`'s
``MQTTMessageInfo`` reports the broker's PUBACK.

An outbox row for MQTT holds the topic and the payload: :func:`pack_message` /
:func:`unpack_message` (``topic NUL payload``; MQTT forbids NUL in topic names).

Every MQTT plugin (event sink, reject output, trigger) configures its broker with the same keys,
:class:`MqttBrokerCfg`: ``broker`` (``mqtt://HOST[:1883]`` in clear, ``mqtts://HOST[:8883]`` over TLS
1.2+, the broker's certificate and name checked against the system's authorities or ``tls.ca_file``),
``username``/``password`` and ``tls`` (the CA file and a client certificate for brokers that ask for
one). :func:`parse_mqtt_url` and :func:`tls_context` turn them into a connection, once.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Mapping, Optional

from pydantic import AfterValidator, Field, model_validator

from ...errors import ConfigError
from ..schema import DeviceOnlyFile, Strict, checked

log = logging.getLogger(__name__)

SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}  # scheme -> (default port, TLS)


@dataclass(frozen=True)
class BrokerAddress:
    """Where a broker listens and whether it speaks TLS."""

    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"{'mqtts://' if self.tls else ''}{self.host}:{self.port}"


def _broker(v: str) -> str:
    checked(parse_mqtt_url)(v)
    return v


Broker = Annotated[str, AfterValidator(_broker)]  # mqtt://HOST[:PORT], HOST[:PORT] or mqtts://HOST[:PORT]


class MqttTlsCfg(Strict):
    ca_file: Optional[DeviceOnlyFile] = Field(None, description="PEM file of the authorities that signed the broker's certificate (default: the system's); in a bundle a device:PATH")
    cert_file: Optional[DeviceOnlyFile] = Field(None, description="client certificate (PEM) for a broker that requires one, with key_file; in a bundle a device:PATH")
    key_file: Optional[DeviceOnlyFile] = Field(None, description="the client certificate's unencrypted PEM key, readable by the service user only; in a bundle a device:PATH")

    @model_validator(mode="after")
    def _pair(self) -> "MqttTlsCfg":
        from ..tls import check_pair

        checked(check_pair)(self.cert_file, self.key_file)
        return self


class MqttBrokerCfg(Strict):
    """The broker keys every MQTT plugin shares."""

    broker: Broker = Field("127.0.0.1:1883", description="mqtt://HOST[:PORT] or HOST[:PORT] (port 1883), or mqtts://HOST[:PORT] over TLS (port 8883, the broker's certificate checked)")
    username: Optional[str] = Field(None, description="broker user name")
    password: Optional[str] = Field(None, description="broker password (deploy.yaml is kept 0600 or 0640 on the device)")
    tls: Optional[MqttTlsCfg] = Field(None, description="for an mqtts:// broker: the authorities to trust and a client certificate")

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> "MqttBrokerCfg":
        checked(check_scheme)(parse_mqtt_url(self.broker), self.tls)
        return self


def check_scheme(address: BrokerAddress, tls: Any) -> None:
    """``tls`` settings are for an mqtts:// broker only."""
    if tls and not address.tls:
        raise ConfigError(f"tls: is for an mqtts:// broker, got {address} (write mqtts://HOST[:PORT])")


def tls_context(address: BrokerAddress, tls: Any = None) -> Any:
    """The client TLS context for ``address`` (None in clear): ``tls`` a :class:`MqttTlsCfg`, its dict, or None."""
    if hasattr(tls, "model_dump"):
        tls = tls.model_dump()
    check_scheme(address, tls)
    if not address.tls:
        return None
    from ..tls import client_context

    t: Mapping[str, Any] = tls or {}
    return client_context(t.get("ca_file"), t.get("cert_file"), t.get("key_file"))


def tls_problem(host: str, port: int, context: Any, timeout: float = 2.0) -> str | None:
    """Why a TLS connection to ``host:port`` fails (paho retries quietly and says nothing): one handshake with the
    client's own context; None when it succeeds or the broker does not answer at all."""
    import socket
    import ssl

    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as e:
        return f"the broker's certificate does not check out: {e.verify_message or e.reason}"
    except ssl.SSLError as e:
        return f"TLS handshake with the broker failed: {e.reason or e}"
    except OSError:
        return None


def parse_mqtt_url(url: str) -> BrokerAddress:
    """``mqtt://host[:port]``, ``host[:port]`` (port 1883) or ``mqtts://host[:port]`` (TLS, port 8883)."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        scheme, rest = "mqtt", str(url)
    if scheme.lower() not in SCHEMES:
        raise ConfigError(f"MQTT broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    default, tls = SCHEMES[scheme.lower()]
    u = rest.split("/", 1)[0]
    host, _, port = u.rpartition(":") if ":" in u else (u, "", str(default))
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"MQTT broker must look like host:port, got {url!r}") from None
    if not 0 < p < 65536:
        raise ConfigError(f"MQTT broker port must be 1-65535, got {p} in {url!r}")
    return BrokerAddress(host or "127.0.0.1", p, tls)


def pack_message(topic: str, payload: bytes) -> bytes:
    """One outbox body holding ``topic`` and ``payload`` (see :func:`unpack_message`)."""
    if not topic or "\0" in topic:
        raise ConfigError(f"MQTT topic must be non-empty without NUL characters, got {topic!r}")
    return topic.encode("utf-8") + b"\0" + bytes(payload)


def unpack_message(body: bytes) -> tuple[str, bytes]:
    """(topic, payload) from a :func:`pack_message` body."""
    topic, sep, payload = bytes(body).partition(b"\0")
    if not sep:
        raise ValueError("not an MQTT outbox body: no NUL between topic and payload")
    return topic.decode("utf-8"), payload


class MqttClient:
    """One broker connection: ``publish``, ``subscribe`` and ``close``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None, keepalive: int = 30,
                 reconnect_min_s: float = 1.0, reconnect_max_s: float = 30.0,
                 on_connected: Callable[[], None] | None = None, tls: Any = None) -> None:
        """``tls``: an ``ssl.SSLContext`` (:func:`tls_context`) to speak TLS, None in clear."""
        try:
            import paho.mqtt.client as paho
        except ImportError as e:  # pragma: no cover - paho-mqtt is in the runtime extra
            raise ConfigError("MQTT needs paho-mqtt: pip install 'edgeship[runtime]'") from e
        self.host, self.port = host, int(port)
        self._subs: dict[str, tuple[int, Callable[[str, bytes], None]]] = {}
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._pending: list = []
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"edgeship-{uuid.uuid4().hex[:10]}")
        if username:
            self._client.username_pw_set(username, password)
        self._tls = tls
        if tls is not None:
            self._client.tls_set_context(tls)
        self._on_connected = on_connected
        self._client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=max(reconnect_min_s, reconnect_max_s))
        self._client.max_queued_messages_set(10000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect_async(self.host, self.port, keepalive=keepalive)
        self._client.loop_start()

    # paho callbacks (VERSION2 signatures)
    def _on_connect(self, client, userdata, flags, reason_code, properties=None) -> None:
        if getattr(reason_code, "is_failure", False):
            log.warning("MQTT %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        for topic, (qos, _) in self._subs.items():
            client.subscribe(topic, qos)
        self._connected.set()
        log.info("MQTT connected to %s:%d", self.host, self.port)
        if self._on_connected is not None:
            try:
                self._on_connected()
            except Exception:  # never kill paho's network thread
                log.exception("MQTT on_connected hook failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None) -> None:
        self._connected.clear()
        log.info("MQTT disconnected from %s:%d (%s)", self.host, self.port, reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        import paho.mqtt.client as paho

        for topic, (_, callback) in list(self._subs.items()):
            if paho.topic_matches_sub(topic, msg.topic):
                try:
                    callback(msg.topic, bytes(msg.payload))
                except Exception:  # a bad message must not kill paho's network thread
                    log.exception("MQTT handler for %s failed", topic)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def explain_failure(self, report: Callable[[str], None]) -> None:
        """For a TLS broker that did not connect: find why in the background (the caller is starting a run) and
        ``report`` the reason if it is a TLS one and the client is still not connected."""
        if self._tls is None:
            return

        def look() -> None:
            why = tls_problem(self.host, self.port, self._tls)
            if why and not self.connected:
                report(why)

        threading.Thread(target=look, name="mqtt-tls-check", daemon=True).start()

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """Block until connected (True) or ``timeout`` seconds passed (False)."""
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False):
        """Hand a message to paho; returns its ``MQTTMessageInfo`` (``is_published()`` turns True on PUBACK).

        A QoS>0 message published while disconnected is queued by paho and sent after the reconnect,
        but paho marks it ``MQTT_ERR_NO_CONN``, which makes ``is_published()`` raise even once it went
        out; it is marked as queued (``MQTT_ERR_SUCCESS``) here. A full queue stays an error.
        """
        import paho.mqtt.client as paho

        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            if info.rc == paho.MQTT_ERR_NO_CONN:
                info.rc = paho.MQTT_ERR_SUCCESS
            with self._lock:
                self._pending = [i for i in self._pending if not _done(i)]
                self._pending.append(info)
        return info

    def pending(self) -> int:
        """QoS>0 messages handed to paho and not acknowledged by the broker yet (held in memory)."""
        with self._lock:
            self._pending = [i for i in self._pending if not _done(i)]
            return len(self._pending)

    def subscribe(self, topic: str, callback: Callable[[str, bytes], None], *, qos: int = 1) -> None:
        self._subs[topic] = (qos, callback)
        if self.connected:
            self._client.subscribe(topic, qos)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until the broker has acknowledged every QoS>0 message published so far."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.connected:
            with self._lock:
                self._pending = [i for i in self._pending if not _done(i)]
                if not self._pending:
                    return
            time.sleep(0.02)

    def close(self) -> None:
        self.flush()
        self._client.disconnect()
        self._client.loop_stop()


def _done(info) -> bool:
    """True once paho is finished with a message: acknowledged, or refused (queue full)."""
    try:
        return info.is_published()
    except (ValueError, RuntimeError):
        return True


NO_PUBACK = "no PUBACK yet"


def wait_puback(info, timeout: float, stop: threading.Event | None = None) -> str | None:
    """None once the broker acknowledged ``info``; otherwise why not (after at most ``timeout`` s)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            info.wait_for_publish(min(0.1, max(0.0, deadline - time.monotonic())))
            if info.is_published():
                return None
        except (ValueError, RuntimeError) as e:  # paho's outgoing queue full, or the publish failed
            return f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
            return NO_PUBACK
