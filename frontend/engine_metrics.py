"""The engine's `vllm:*` metrics, re-exported on the serving port's /metrics under vLLM's own names and labels.

Routers (the Gateway API Inference Extension's endpoint picker, vLLM's router, KEDA/HPA through Prometheus) scrape
the serving port. The model publishes the engine's numbers on Triton's metrics port (engine_metrics.py in the model
repository); on each scrape of /metrics this module reads that text (at most once per `max_age` seconds, shared by
concurrent scrapes), keeps the `vllm:` families, and relabels Triton's `model`/`version` as vLLM's
`model_name`/`engine`. Nothing happens on the generation path.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

logger = logging.getLogger("frontend")

PREFIX = "vllm:"
# Labels Triton puts on a model's custom metrics; vLLM names the same facts model_name and engine.
TRITON_LABELS = ("model", "version")


def engine_families(text: str, model_name: str | None = None) -> list[Metric]:
    """The `vllm:` families of a Prometheus text page, with vLLM's labels in place of Triton's."""
    families = []
    for family in text_string_to_metric_families(text):
        if not family.name.startswith(PREFIX):
            continue
        out = Metric(family.name, family.documentation, family.type, family.unit)
        out.samples = [_relabel(sample, model_name) for sample in family.samples]
        families.append(out)
    return families


def _relabel(sample: Sample, model_name: str | None) -> Sample:
    labels = dict(sample.labels)
    if "model" not in labels:
        return sample  # the info gauges carry vLLM's labels already
    triton_model = labels.pop("model")
    labels.pop("version", None)
    labels = {"model_name": model_name or triton_model, "engine": "0", **labels}
    return sample._replace(labels=labels)


class _Families:
    """A collector over a fixed list of families (what prometheus_client's generate_latest wants)."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


class EngineMetricsProxy:
    """Fetches Triton's metrics page, at most once per `max_age` seconds, and keeps the engine's families."""

    def __init__(self, url: str, max_age: float = 0.5, timeout: float = 2.0) -> None:
        self.url = url
        self.max_age = max_age
        self.timeout = timeout
        self._fetched_at = -float("inf")
        self._families: list[Metric] = []
        self._lock = asyncio.Lock()
        self.errors = 0

    def _fetch(self) -> str:
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
            return response.read().decode("utf-8", errors="replace")

    async def collector(self, model_name: str | None = None) -> _Families:
        """The engine's families as fresh as `max_age`; none while Triton's metrics port does not answer."""
        async with self._lock:
            if time.monotonic() - self._fetched_at >= self.max_age:
                try:
                    text = await asyncio.to_thread(self._fetch)
                    self._families = engine_families(text, model_name)
                except (OSError, ValueError) as exc:
                    self.errors += 1
                    self._families = []  # stale numbers would mislead a router
                    logger.debug("engine metrics from %s unavailable: %s", self.url, exc)
                self._fetched_at = time.monotonic()
            return _Families(self._families)
