"""Every MQTT topic from one helper (agent/topics.py)."""


def test_every_topic_comes_from_one_helper():
    from ganomaly_edge.agent.topics import Topics

    t = Topics("plant/line1")
    assert t.available() == "plant/line1/available" and t.stats() == "plant/line1/stats"
    assert t.crop("cam", "ab12", 2) == "plant/line1/cam/alarm/ab12/crop/2"
    assert t.overlay("cam", "ab12") == "plant/line1/cam/alarm/ab12/overlay"
    assert t.status("cam") == "plant/line1/cam/status" and t.alarm("cam") == "plant/line1/cam/alarm"
