"""vLLM engine metrics on Triton's metrics endpoint, with vLLM's own metric names.

A vLLM V1 stat logger receives the engine's per-step stats on the engine's event loop; it only queues numbers.
A background thread turns them into Triton custom metrics (each update is an IPC from the stub to the server),
so the engine loop never waits on metrics. Counters and gauges are summed per flush and histograms are observed
per request, except `vllm:inter_token_latency_seconds`, which takes one observation (one IPC) per generated token:
it is off unless asked for (`REPORT_INTER_TOKEN_LATENCY`); `vllm:request_time_per_output_token_seconds` (each
request's mean) is the cheap stand-in.

The two info gauges of the Gateway API Inference Extension's model-server protocol follow vLLM's semantics:
`vllm:cache_config_info` (value 1; labels: the engine's CacheConfig, e.g. block_size, num_gpu_blocks) once the engine
is up, and, with LoRA enabled, `vllm:lora_requests_info{max_lora,running_lora_adapters,waiting_lora_adapters}`
whose value is the time of its last update (comma-separated adapter names, as vLLM's), one series at a time.
"""

from __future__ import annotations

import gc
import queue
import threading
import time
from typing import Any

import triton_python_backend_utils as pb_utils

# Buckets as vLLM's Prometheus logger uses them (seconds / tokens).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0]
ITL_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
LATENCY_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0]
TOKEN_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
N_BUCKETS = [1, 2, 5, 10, 20]  # vllm:request_params_n, as vllm_backend and vLLM bucket it


class EngineMetrics:
    """Triton custom metrics for one model instance, fed by `stat_logger_factory()`."""

    FLUSH_SECONDS = 0.2

    def __init__(self, model: str, version: str, inter_token_latency: bool = False) -> None:
        labels = {"model": model, "version": version}
        family = pb_utils.MetricFamily
        # Keep references to the families: Triton drops a family whose object is collected.
        self._families: list[Any] = []

        def metric(name: str, description: str, kind, buckets=None, extra: dict | None = None):
            fam = family(name=name, description=description, kind=kind)
            self._families.append(fam)
            metric_labels = {**labels, **(extra or {})}
            return fam.Metric(labels=metric_labels, buckets=buckets) if buckets else fam.Metric(labels=metric_labels)

        self.running = metric("vllm:num_requests_running", "Requests in model execution batches.", family.GAUGE)
        self.waiting = metric("vllm:num_requests_waiting", "Requests waiting to be processed.", family.GAUGE)
        self.kv_usage = metric("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", family.GAUGE)
        self.prompt_tokens = metric("vllm:prompt_tokens_total", "Prefill tokens processed.", family.COUNTER)
        self.generation_tokens = metric("vllm:generation_tokens_total", "Generation tokens processed.", family.COUNTER)
        success = family(
            name="vllm:request_success_total", description="Finished requests, by finish reason.", kind=family.COUNTER
        )
        self._families.append(success)
        self.success = {
            reason: success.Metric(labels={**labels, "finished_reason": reason}) for reason in FINISH_REASONS
        }
        hist = family.HISTOGRAM
        self.ttft = metric("vllm:time_to_first_token_seconds", "Time to first token.", hist, TTFT_BUCKETS)
        self.itl = None
        if inter_token_latency:
            self.itl = metric("vllm:inter_token_latency_seconds", "Inter-token latency.", hist, ITL_BUCKETS)
        self.tpot = metric(
            "vllm:request_time_per_output_token_seconds",
            "Mean time per output token of each request.",
            hist,
            ITL_BUCKETS,
        )
        self.e2e = metric("vllm:e2e_request_latency_seconds", "End-to-end request latency.", hist, LATENCY_BUCKETS)
        self.queue_time = metric("vllm:request_queue_time_seconds", "Time spent waiting.", hist, LATENCY_BUCKETS)
        self.request_prompt = metric("vllm:request_prompt_tokens", "Prompt tokens per request.", hist, TOKEN_BUCKETS)
        self.request_generation = metric(
            "vllm:request_generation_tokens", "Generated tokens per request.", hist, TOKEN_BUCKETS
        )
        self.params_n = metric("vllm:request_params_n", "The n request parameter.", hist, N_BUCKETS)
        self._cache_info = None
        self._lora_family = None
        self._lora_info: tuple[dict[str, str], Any] | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vllm-metrics", daemon=True)
        self._thread.start()

    def stat_logger_factory(self):
        """A vLLM StatLoggerFactory: (vllm_config, engine_index) -> StatLoggerBase."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        metrics = self

        class TritonStatLogger(StatLoggerBase):
            def __init__(self, vllm_config, engine_index: int = 0) -> None:
                self.engine_index = engine_index
                self.vllm_config = vllm_config
                lora = vllm_config.lora_config
                self.max_lora = None if lora is None else str(lora.max_loras)

            def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
                metrics._queue.put(_snapshot(scheduler_stats, iteration_stats, self.max_lora))

            def log_engine_initialized(self) -> None:
                # num_gpu_blocks is known now (vLLM's own logger publishes cache_config_info here too).
                info = {**cache_config_labels(self.vllm_config.cache_config), "engine": str(self.engine_index)}
                metrics._queue.put({"cache_config": info})

        return TritonStatLogger

    def close(self) -> None:
        """Stop publishing and release every metric and family now, while the stub still talks to Triton: left to
        the interpreter's exit, their destructors ran after the stub's shared memory was gone (segfault in
        MetricFamily::~MetricFamily)."""
        self._stop.set()
        self._thread.join(timeout=2)
        self._flush()
        # Metrics first, then the families that own them.
        names = sorted(vars(self), key=lambda n: n in ("_families", "_lora_family"))
        for name in names:
            attribute = getattr(self, name)
            if name in ("_stop", "_thread", "_queue"):
                continue
            if isinstance(attribute, (list, dict)):
                attribute.clear()
            setattr(self, name, None)
        gc.collect()

    def _run(self) -> None:
        while not self._stop.wait(self.FLUSH_SECONDS):
            self._flush()

    def _flush(self) -> None:
        gauges = None
        prompt = generation = 0
        finished: dict[str, int] = {}
        observations: list[tuple[Any, float]] = []
        lora = None
        while True:
            try:
                snap = self._queue.get_nowait()
            except queue.Empty:
                break
            if "cache_config" in snap:
                self._publish_cache_config(snap["cache_config"])
                continue
            if snap["gauges"] is not None:
                gauges = snap["gauges"]
            if snap.get("lora") is not None:
                lora = snap["lora"]
            prompt += snap["prompt_tokens"]
            generation += snap["generation_tokens"]
            observations += [(self.ttft, v) for v in snap["ttft"]]
            observations += [(self.params_n, v) for v in snap["n"]]
            if self.itl is not None:
                observations += [(self.itl, v) for v in snap["itl"]]
            for request in snap["finished"]:
                finished[request["reason"]] = finished.get(request["reason"], 0) + 1
                observations += [
                    (self.e2e, request["e2e"]),
                    (self.queue_time, request["queued"]),
                    (self.request_prompt, request["prompt_tokens"]),
                    (self.request_generation, request["generation_tokens"]),
                ]
                if request["generation_tokens"] > 1:
                    observations.append((self.tpot, request["tpot"]))
        if gauges is not None:
            self.running.set(gauges[0])
            self.waiting.set(gauges[1])
            self.kv_usage.set(gauges[2])
        if prompt:
            self.prompt_tokens.increment(prompt)
        if generation:
            self.generation_tokens.increment(generation)
        for reason, count in finished.items():
            if reason in self.success:
                self.success[reason].increment(count)
        for histogram, value in observations:
            histogram.observe(value)
        if lora is not None:
            self._publish_lora(lora)

    def _publish_cache_config(self, labels: dict[str, str]) -> None:
        family = pb_utils.MetricFamily(
            name="vllm:cache_config_info",
            description="Information of the LLMEngine CacheConfig",
            kind=pb_utils.MetricFamily.GAUGE,
        )
        self._families.append(family)
        self._cache_info = family.Metric(labels=labels)
        self._cache_info.set(1)

    def _publish_lora(self, labels: dict[str, str]) -> None:
        """Set the series for the current adapters to now; a new set of adapters replaces the series."""
        if self._lora_info is None or self._lora_info[0] != labels:
            if self._lora_family is None:
                self._lora_family = pb_utils.MetricFamily(
                    name="vllm:lora_requests_info",
                    description="Running stats on lora requests.",
                    kind=pb_utils.MetricFamily.GAUGE,
                )
            self._lora_info = (labels, self._lora_family.Metric(labels=labels))
        self._lora_info[1].set(time.time())


def cache_config_labels(cache_config) -> dict[str, str]:
    """vLLM's cache_config_info labels: every CacheConfig field as a string (CacheConfig.metrics_info())."""
    return {str(key): str(value) for key, value in cache_config.metrics_info().items()}


def lora_labels(max_lora: str, running: dict[str, int], waiting: dict[str, int]) -> dict[str, str]:
    """vLLM's lora_requests_info labels: max_lora and the adapters with requests running / waiting."""
    return {
        "max_lora": max_lora,
        "running_lora_adapters": ",".join(running),
        "waiting_lora_adapters": ",".join(waiting),
    }


def _snapshot(scheduler_stats, iteration_stats, max_lora: str | None = None) -> dict[str, Any]:
    """Plain numbers from vLLM's stats objects (cheap; runs on the engine's loop)."""
    gauges = None
    lora = None
    if scheduler_stats is not None:
        gauges = (scheduler_stats.num_running_reqs, scheduler_stats.num_waiting_reqs, scheduler_stats.kv_cache_usage)
        if max_lora is not None:
            lora = lora_labels(max_lora, scheduler_stats.running_lora_adapters, scheduler_stats.waiting_lora_adapters)
    snap: dict[str, Any] = {
        "gauges": gauges,
        "lora": lora,
        "prompt_tokens": 0,
        "generation_tokens": 0,
        "ttft": [],
        "n": [],
        "itl": [],
        "finished": [],
    }
    if iteration_stats is not None:
        snap["prompt_tokens"] = iteration_stats.num_prompt_tokens
        snap["generation_tokens"] = iteration_stats.num_generation_tokens
        snap["ttft"] = list(iteration_stats.time_to_first_tokens_iter)
        snap["n"] = list(getattr(iteration_stats, "n_params_iter", ()))
        snap["itl"] = list(iteration_stats.inter_token_latencies_iter)
        snap["finished"] = [
            {
                "reason": str(stats.finish_reason),
                "e2e": stats.e2e_latency,
                "queued": stats.queued_time,
                "prompt_tokens": stats.num_prompt_tokens,
                "generation_tokens": stats.num_generation_tokens,
                "tpot": stats.mean_time_per_output_token,
            }
            for stats in iteration_stats.finished_requests
        ]
    return snap
