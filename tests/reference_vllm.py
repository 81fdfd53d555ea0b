"""Offline vLLM reference outputs for parity tests: run as a subprocess (vLLM spawns processes; needs __main__).

Input (stdin): {"engine_args": {...}, "cases": [{"prompt": str | [ids], "params": {...},
"lora": [name, id, path] | null, "chat": [messages] | null}]}.
Output (stdout, last line): "RESULT " + JSON list of {"texts", "token_counts", "prompt_tokens"}.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    spec = json.load(sys.stdin)
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest
    from vllm.sampling_params import StructuredOutputsParams

    llm = LLM(**spec["engine_args"])
    results = []
    for case in spec["cases"]:
        kwargs = dict(case["params"])
        if isinstance(kwargs.get("structured_outputs"), dict):
            kwargs["structured_outputs"] = StructuredOutputsParams(**kwargs["structured_outputs"])
        params = SamplingParams(**kwargs)
        lora = LoRARequest(*case["lora"]) if case.get("lora") else None
        if case.get("chat"):
            outputs = llm.chat(case["chat"], params, lora_request=lora, use_tqdm=False)
        else:
            prompt = case["prompt"]
            prompt = {"prompt_token_ids": prompt} if isinstance(prompt, list) else prompt
            outputs = llm.generate([prompt], params, lora_request=lora, use_tqdm=False)
        out = outputs[0]
        results.append(
            {
                "texts": [c.text for c in out.outputs],
                "token_counts": [len(c.token_ids) for c in out.outputs],
                "prompt_tokens": len(out.prompt_token_ids or []),
            }
        )
    print("\nRESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
