"""``GET /metrics``: the agent's counters in Prometheus' text format (``prometheus_client``).

A collector reads the pipelines' counters at scrape time: nothing is added to the path of a
frame but the histogram buckets ``stats.Latency`` keeps anyway.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

COUNTERS = {  # CameraStats counter -> (metric, help)
    "alarms": ("ganomaly_alarms", "alarms raised"),
    "dropped": ("ganomaly_frames_dropped", "frames dropped (a live source ahead of inference)"),
    "skipped": ("ganomaly_frames_skipped", "frames skipped"),
    "bad_frames": ("ganomaly_bad_frames", "frames that could not be scored"),
    "reconnects": ("ganomaly_source_reconnects", "source reopens"),
    "stalls": ("ganomaly_source_stalls", "source stalls"),
    "source_errors": ("ganomaly_source_errors", "source errors"),
    "trigger_reconnects": ("ganomaly_trigger_reconnects", "GPIO trigger line reopens"),
}


class AgentCollector:
    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        yield from self._cameras()
        yield from self._stores()

    def _cameras(self):
        pipes = self.agent.pipelines
        fams = {k: CounterMetricFamily(m, h, labels=["camera"]) for k, (m, h) in COUNTERS.items()}
        captured = CounterMetricFamily("ganomaly_frames_captured", "frames read from the source", labels=["camera"])
        processed = CounterMetricFamily("ganomaly_frames_processed", "frames scored", labels=["camera"])
        up = GaugeMetricFamily("ganomaly_camera_up", "1 while the camera is online", labels=["camera"])
        depth = GaugeMetricFamily("ganomaly_queue_depth", "frames waiting for inference", labels=["camera"])
        stage = HistogramMetricFamily("ganomaly_stage_latency_seconds", "latency of each pipeline stage",
                                      labels=["camera", "stage"])
        engine = HistogramMetricFamily("ganomaly_engine_seconds", "engine time per micro-batch", labels=["camera"])
        samples = CounterMetricFamily("ganomaly_samples", "sample frames ([history] sample_every): written, "
                                      "dropped_busy, failed, deleted", labels=["camera", "outcome"])
        for p in pipes:
            name, s = p.cam.name, p.stats
            for k, fam in fams.items():
                fam.add_metric([name], s[k])
            captured.add_metric([name], s.captured.count)
            processed.add_metric([name], s.processed.count)
            up.add_metric([name], 1.0 if p.online else 0.0)
            depth.add_metric([name], p.q.qsize())
            for st, lat in s.latency.items():
                buckets, total = lat.histogram()
                stage.add_metric([name, st], buckets, total)
                if st == "inference_batch":
                    engine.add_metric([name], buckets, total)
            if p.samples is not None:
                for k in ("written", "dropped_busy", "failed", "deleted"):
                    samples.add_metric([name, k], p.samples.counts[k])
        yield from (*fams.values(), captured, processed, up, depth, stage, engine, samples)

    def _stores(self):
        n, size = self.agent.store.depth()
        yield GaugeMetricFamily("ganomaly_outbox_events", "alarms stored and not yet acknowledged by the broker", value=n)
        yield GaugeMetricFamily("ganomaly_outbox_bytes", "bytes of those alarms", value=size)
        ev = CounterMetricFamily("ganomaly_outbox_evicted", "undelivered alarms evicted", labels=["reason"])
        for k, v in self.agent.store.counters().items():
            ev.add_metric([k], v)
        yield ev
        pub = self.agent.publisher
        yield GaugeMetricFamily("ganomaly_mqtt_connected", "1 while connected to the broker",
                                value=1.0 if pub is not None and pub.connected.is_set() else 0.0)
        h = self.agent.history
        if h is None:
            return
        yield from _history_metrics(h, getattr(self.agent, "verdicts", None))


def _history_metrics(h, verdicts) -> Any:
    totals = h.totals()
    yield GaugeMetricFamily("ganomaly_history_bytes", "bytes of alarms and images in the history", value=totals["bytes"])
    yield GaugeMetricFamily("ganomaly_history_alarms", "alarms in the history", value=totals["alarms"])
    ev = CounterMetricFamily("ganomaly_history_evicted", "alarms dropped from the history", labels=["reason"])
    for k, v in h.counters().items():
        if k.startswith(("evicted", "dropped")):
            ev.add_metric([k], v)
    yield ev
    vc = CounterMetricFamily("ganomaly_verdicts", "verdicts on alarms kept in the history", labels=["camera", "verdict"])
    prec = GaugeMetricFamily("ganomaly_precision", "confirmed defects / reviewed alarms (precision at the line)",
                             labels=["camera"])
    for cam, p in h.precision().items():
        vc.add_metric([cam, "defect"], p["defect"])
        vc.add_metric([cam, "false_alarm"], p["false_alarm"])
        if p["precision"] is not None:
            prec.add_metric([cam], p["precision"])
    yield vc
    yield prec
    if verdicts is not None:
        mq = CounterMetricFamily("ganomaly_verdict_messages", "verdict/set messages over MQTT", labels=["result"])
        for k, v in verdicts.counts.items():
            if k.startswith("mqtt_"):
                mq.add_metric([k[5:]], v)
        yield mq


def metrics_text(agent) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(agent))
    return generate_latest(registry)
