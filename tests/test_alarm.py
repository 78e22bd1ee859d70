"""The typed alarm event and its JSON schema (agent/alarm.py)."""


def test_alarm_schema_file_is_generated_from_the_typed_event():
    from ganomaly_edge.agent.alarm import SCHEMA_PATH, schema_text

    assert open(SCHEMA_PATH).read() == schema_text(), \
        "agent/alarm.schema.json is stale: run python -m ganomaly_edge.agent.alarm"
