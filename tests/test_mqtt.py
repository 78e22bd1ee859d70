"""The MQTT publisher (agent/mqtt.py): PUBACKs, in-flight events, reconnects."""

import time

from ganomaly_edge.agent.store import EventStore


def test_a_puback_wakes_the_flush_loop(tmp_path):
    """The backlog drains at the broker's pace: each acknowledgement lets the next event go at once,
    not after the flush loop's poll (it drained at 32 events/s that way)."""
    from paho.mqtt.reasoncodes import ReasonCode
    from paho.mqtt.packettypes import PacketTypes

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    pub = MqttPublisher(MqttConfig(), Topics("t"), "c", store)
    seq = store.add("e1", "cam", "t/cam/alarm", {"i": 1}, [])
    pub.event_mids[seq], pub.json_mid[seq], pub.inflight[7] = {7}, 7, seq
    pub.wake.clear()
    pub._on_publish(pub.client, None, 7, ReasonCode(PacketTypes.PUBACK, identifier=0), None)
    assert pub.wake.is_set() and store.depth()[0] == 0
    seq = store.add("e2", "cam", "t/cam/alarm", {"i": 2}, [])
    pub.event_mids[seq], pub.json_mid[seq], pub.inflight[8] = {8}, 8, seq
    pub._on_publish(pub.client, None, 8, ReasonCode(PacketTypes.PUBACK, identifier=0x87), None)  # not authorized
    assert store.depth()[0] == 1 and pub.stats()["refused_events"] == 1 and seq in pub.refused
    store.close()


def test_events_with_and_without_crops_go_out_once_each_and_leave_the_store(tmp_path):
    """Against a real mosquitto: an event is registered as in flight whether or not it has a crop,
    so it is sent once, its PUBACK deletes it, and the flush loop moves on to the next."""
    from support.agent import Subscriber

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics
    from ganomaly_edge.tools.broker import Mosquitto

    with Mosquitto(workdir=str(tmp_path / "broker")) as broker:
        sub = Subscriber(broker.port, prefix="t")
        store = EventStore(str(tmp_path / "ev.db"))
        topics = Topics("t")
        for i in range(6):
            blobs = [("t/cam/alarm/crop/0", b"\xff\xd8" + bytes([i]))] if i % 2 else []
            store.add(f"e{i}", "cam", topics.alarm("cam"), {"id": f"e{i}"}, blobs)
        pub = MqttPublisher(MqttConfig(port=broker.port), topics, "agent", store)
        pub.start()
        deadline = time.monotonic() + 20
        while store.depth()[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # time for any redelivery to show
        pub.stop(flush_timeout=1)
        sub.close()
        assert store.depth()[0] == 0
        assert sorted(e["id"] for e in sub.alarms()) == [f"e{i}" for i in range(6)]  # each exactly once
        store.close()


def test_a_disconnect_while_an_event_goes_out_sends_it_again_after_reconnecting(tmp_path):
    """The connection can drop between an event's publishes and the last message sent for it (the
    latest-crop image). The disconnect forgets what was in flight; the event must then be offered
    again from the store, not skipped because it was counted as sent after the reset."""
    from types import SimpleNamespace

    import paho.mqtt.client as mqtt

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    topics = Topics("t")
    pub = MqttPublisher(MqttConfig(), topics, "c", store)
    store.add("e1", "cam", topics.alarm("cam"), {"id": "e1"}, [("t/cam/alarm/crop/0", b"\xff\xd8")])
    mids = iter(range(1, 100))

    def publish(topic, payload, qos=0, retain=False):
        if topic == topics.latest_crop("cam"):
            pub._on_disconnect(pub.client, None, None, mqtt.ReasonCode(mqtt.PacketTypes.DISCONNECT, identifier=0x8B),
                               None)  # the broker went away
        return SimpleNamespace(rc=mqtt.MQTT_ERR_SUCCESS, mid=next(mids))

    pub.client.publish = publish
    pub.connected.set()
    (ev,) = store.pending(limit=1, after_seq=0)
    assert pub._publish_event(ev)
    assert pub.sent_upto == 0 and not pub.inflight and not pub.event_mids
    assert [e.id for e in store.pending(limit=5, after_seq=pub.sent_upto)] == ["e1"]  # offered again
    store.close()


def test_a_status_set_while_a_connect_republishes_the_retained_ones_is_not_lost(tmp_path):
    """A camera's status set on another thread while the connect callback republishes the retained
    messages is published once: in that round or by set_retained after it, never neither (the
    camera stayed "offline" to subscribers when it came online 3 ms after the connect)."""
    import threading

    from ganomaly_edge.agent.config import MqttConfig
    from ganomaly_edge.agent.mqtt import MqttPublisher
    from ganomaly_edge.agent.topics import Topics

    store = EventStore(str(tmp_path / "ev.db"))
    pub = MqttPublisher(MqttConfig(), Topics("t"), "c", store, retained=[("t/first", "x")])
    sent, racer = [], []

    class Client:  # records what goes out; the first retained message lets a status change race it
        def publish(self, topic, payload, qos=0, retain=False):
            sent.append((topic, payload))
            if topic == "t/first" and not racer:
                racer.append(threading.Thread(target=pub.set_retained, args=("t/cam1/status", "online")))
                racer[0].start()
                racer[0].join(0.5)  # as far as it gets while the connect is still publishing

        def subscribe(self, topic, qos=0):
            return 0, 1

    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    pub.client = Client()
    pub._on_connect(pub.client, None, None, ReasonCode(PacketTypes.CONNACK, identifier=0), None)
    racer[0].join(5)
    assert ("t/cam1/status", "online") in sent, sent
    assert pub.connected.is_set()
    store.close()
