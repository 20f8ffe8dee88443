"""MQTT over TLS (``mqtts://``) for every MQTT plugin: a real mosquitto with a TLS listener on 127.0.0.1, the broker's
certificate checked (a broker with another certificate gets nothing, in clear or otherwise), client certificates
for brokers that require them, and one-line errors for bad keys and files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from edgeship.errors import ConfigError
from edgeship.runtime.apps.events import MqttEventSink, MqttEvents
from edgeship.runtime.apps.mqtt import BrokerAddress, parse_mqtt_url
from edgeship.runtime.apps.outputs import MqttOutput, MqttOutputCfg
from edgeship.runtime.apps.triggers import ExternalTrigger, TriggerCfg
from edgeship.runtime.config import load_config
from tests.helpers.certs import self_signed
from tests.helpers.mqtt import Mosquitto, Subscriber, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed (scripts/system-deps.sh)")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    broker_cert, broker_key = self_signed(d, "broker")
    other_cert, _ = self_signed(d, "impostor")
    client_cert, client_key = self_signed(d, "client")
    return {"broker_cert": broker_cert, "broker_key": broker_key, "other_ca": other_cert, "client_cert": client_cert,
            "client_key": client_key, "dir": d}


def _sink(port: int, tls: dict | None, **kw) -> MqttEventSink:
    cfg = MqttEvents(type="mqtt", broker=f"mqtts://127.0.0.1:{port}", topic="site/events", snapshots=False, tls=tls,
                     timeout_s=2.0, backoff_s=0.1, max_backoff_s=0.5, drain_s=1.0, **kw)
    return MqttEventSink(**cfg.options())


def test_broker_addresses():
    assert parse_mqtt_url("mqtts://broker.example") == BrokerAddress("broker.example", 8883, True)
    assert parse_mqtt_url("mqtt://b:1999") == BrokerAddress("b", 1999, False)
    assert parse_mqtt_url("b") == BrokerAddress("b", 1883, False)
    assert str(parse_mqtt_url("mqtts://b")) == "mqtts://b:8883"
    for bad in ("ws://b:80", "mqtts://b:0", "b:x"):
        with pytest.raises(ConfigError):
            parse_mqtt_url(bad)


def test_events_over_tls_arrive_and_a_wrong_certificate_gets_nothing(pki, tmp_path):
    with Mosquitto(tmp_path / "broker", tls=(pki["broker_cert"], pki["broker_key"])) as broker:
        with Subscriber(broker.port, "site/#") as sub:
            sink = _sink(broker.tls_port, {"ca_file": str(pki["broker_cert"])})
            sink.open()
            assert sink.client.wait_connected(10) and sink.broker == f"mqtts://127.0.0.1:{broker.tls_port}"
            for i in range(3):
                sink.emit({"id": f"ev-{i}", "type": "zone"}, None)
            msgs = sub.wait(3)
            sink.close()
            assert [json.loads(p)["id"] for t, p in msgs if t == "site/events"] == ["ev-0", "ev-1", "ev-2"]
            # a broker whose certificate the client does not trust: no connection, nothing sent (not even in clear)
            sink = _sink(broker.tls_port, {"ca_file": str(pki["other_ca"])})
            sink.open()
            sink.emit({"id": "ev-secret", "type": "zone"}, None)
            time.sleep(1.5)
            assert not sink.client.connected and sink.client.pending() == 1  # held, not sent anywhere
            assert "the broker's certificate does not check out" in sink.last_error, sink.last_error
            sink.close()
            # the system's authorities do not know a self-signed broker either
            sink = _sink(broker.tls_port, None)
            sink.open()
            time.sleep(1.0)
            assert not sink.client.connected
            sink.close()
            # mqtt:// to the TLS port speaks clear text to a TLS listener: never connected
            plain = MqttEventSink(**MqttEvents(type="mqtt", broker=f"mqtt://127.0.0.1:{broker.tls_port}",
                                               timeout_s=1.0).options())
            plain.open()
            assert not plain.client.connected
            plain.close()
            assert "ev-secret" not in b"".join(p for _, p in sub.messages).decode()


def test_client_certificates_for_brokers_that_require_them(pki, tmp_path):
    with Mosquitto(tmp_path / "broker", tls=(pki["broker_cert"], pki["broker_key"]),
                   client_ca=pki["client_cert"]) as broker:
        with Subscriber(broker.port, "line3/#") as sub:
            tls = {"ca_file": str(pki["broker_cert"]), "cert_file": str(pki["client_cert"]),
                   "key_file": str(pki["client_key"])}
            # the reject output and the trigger take the same broker keys as the event sink
            out = MqttOutput(**MqttOutputCfg(type="mqtt", broker=f"mqtts://127.0.0.1:{broker.tls_port}",
                                              topic="line3/reject", tls=tls).options())
            out.open()
            assert out.client.wait_connected(10)
            out.reject({"frame": 7, "verdict": "fail"})
            assert [json.loads(p)["frame"] for t, p in sub.wait(1) if t == "line3/reject"] == [7]
            out.close()
            trigger = ExternalTrigger.from_config(TriggerCfg(mode="external", mqtt={
                "broker": f"mqtts://127.0.0.1:{broker.tls_port}", "topic": "line3/trigger", "tls": tls}))
            trigger.open()
            assert trigger._mqtt.wait_connected(10)
            for _ in range(20):  # its subscription may reach the broker just after the connection: publish until heard
                sub.publish("line3/trigger", b'{"id": "part-1"}')
                if _wait(lambda: trigger.received >= 1, 0.5):
                    break
            assert trigger.received >= 1
            trigger.close()
            # without its certificate the same client is turned away
            anonymous = _sink(broker.tls_port, {"ca_file": str(pki["broker_cert"])})
            anonymous.open()
            time.sleep(1.0)
            assert not anonymous.client.connected
            anonymous.close()


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not cond():
        time.sleep(0.05)
    return cond()


def test_bad_tls_settings_are_one_line_errors(pki, tmp_path):
    locked_cert, locked_key = self_signed(tmp_path, "locked", passphrase=b"pass-phrase")
    base = {"artifact": "m.tflite"}
    (tmp_path / "m.tflite").write_bytes(b"")
    cases = [
        ({"broker": "mqtt://127.0.0.1:1883", "tls": {"ca_file": str(pki["broker_cert"])}}, "is for an mqtts:// broker"),
        ({"broker": "mqtts://127.0.0.1", "tls": {"cert_file": str(pki["client_cert"])}}, "cert_file and key_file go together"),
        ({"broker": "mqtts://127.0.0.1", "tls": {"ca_file": str(tmp_path / "none.pem")}}, "file not found"),
        ({"broker": "mqtts://127.0.0.1", "tls": {"cafile": "x"}}, "cafile"),
    ]
    for section, words in cases:
        cfg = tmp_path / "deploy.yaml"
        cfg.write_text(yaml.safe_dump({**base, "source": str(tmp_path), "app": {"type": "security", "events": [
            {"type": "mqtt", **section}]}}))
        with pytest.raises(ConfigError) as e:
            load_config(cfg)
        assert "\n" not in str(e.value) and words in str(e.value) and "app.events[0]" in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match="unknown key 'qos'"):  # from Python too, before the run
        ExternalTrigger(mqtt={"broker": "mqtts://127.0.0.1", "qos": 1})
    # files that exist but are not what they should be: the sink says so before the run starts
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("nope\n")
    for tls, words in (({"ca_file": str(garbage)}, "expected PEM certificates"),
                       ({"cert_file": str(locked_cert), "key_file": str(locked_key)}, "is encrypted")):
        with pytest.raises(ConfigError) as e:
            _sink(8883, tls)
        assert "\n" not in str(e.value) and words in str(e.value), str(e.value)
