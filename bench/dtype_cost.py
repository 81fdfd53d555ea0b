"""What float32 costs against bfloat16 on vLLM-CPU for the default model: start time, tokens/s, memory, answer.

    python -m bench.dtype_cost [--model DIR] [--rounds 2] [--out bench/results-dtype.json]

Each round starts one offline vLLM engine per dtype (order alternating between rounds, since this VM drifts) in a
subprocess of its own, and measures: engine start, a batch of 16 prompts x 64 tokens (ignore_eos), one stream of
64 tokens, the resident memory of the engine's process tree, and the greedy chat answer to the README's question.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO / ".models" / "smollm2-135m-instruct"
DTYPES = ("float32", "bfloat16")
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
BATCH, TOKENS = 16, 64


def tree_rss_gib() -> float:
    """Resident memory of this process and its descendants (vLLM's EngineCore and worker)."""
    import psutil  # a vLLM dependency

    me = psutil.Process()
    total = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**30


def worker(model: str, dtype: str) -> dict:
    """One engine: start, measure, answer; returns the numbers."""
    started = time.perf_counter()
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype=dtype, enforce_eager=True, max_model_len=2048, max_num_seqs=BATCH)
    start_s = time.perf_counter() - started
    params = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
    prompts = [f"Write a short story about the number {i}." for i in range(BATCH)]
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    llm.generate(prompts, params, use_tqdm=False)
    batch_tok_s = BATCH * TOKENS / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    llm.generate(prompts[:1], params, use_tqdm=False)
    single_tok_s = TOKENS / (time.perf_counter() - t0)
    rss = tree_rss_gib()
    answer = llm.chat(QUESTION, SamplingParams(temperature=0, max_tokens=32), use_tqdm=False)[0].outputs[0].text
    return {
        "dtype": dtype,
        "start_s": start_s,
        "batch_tok_s": batch_tok_s,
        "single_tok_s": single_tok_s,
        "rss_gib": rss,
        "answer": answer,
    }


def run_one(model: str, dtype: str) -> dict:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.dtype_cost", "--worker", dtype, "--model", model],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{dtype} run failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results-dtype.json")
    parser.add_argument("--worker", choices=DTYPES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.model, args.worker)), flush=True)
        return 0
    runs: list[dict] = []
    for round_no in range(args.rounds):
        order = DTYPES if round_no % 2 == 0 else DTYPES[::-1]
        for dtype in order:
            result = run_one(args.model, dtype)
            result["round"] = round_no
            runs.append(result)
            print(
                f"round {round_no} {dtype:9s} start {result['start_s']:5.1f} s  batch {result['batch_tok_s']:6.0f} "
                f"tok/s  single {result['single_tok_s']:5.0f} tok/s  RSS {result['rss_gib']:.2f} GiB  "
                f"answer {result['answer'][:60]!r}",
                flush=True,
            )
    summary = {}
    for dtype in DTYPES:
        mine = [r for r in runs if r["dtype"] == dtype]
        summary[dtype] = {k: median(r[k] for r in mine) for k in ("start_s", "batch_tok_s", "single_tok_s", "rss_gib")}
        summary[dtype]["answers"] = sorted({r["answer"] for r in mine})
    print("\n| dtype | engine start s | 16x64 tok/s | 1 stream tok/s | RSS GiB | greedy answer |")
    print("|---|---|---|---|---|---|")
    for dtype, s in summary.items():
        print(
            f"| {dtype} | {s['start_s']:.1f} | {s['batch_tok_s']:.0f} | {s['single_tok_s']:.0f} | "
            f"{s['rss_gib']:.2f} | {' / '.join(repr(a[:50]) for a in s['answers'])} |"
        )
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    report = {"machine": {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}, "runs": runs}
    report["summary"] = summary
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
