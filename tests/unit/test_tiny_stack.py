"""The tiny model's engine arguments and prompts have one home (tools/tiny_stack.py): the integration tests' stack,
the soak and the bench run the same engine on the same prompts."""

from __future__ import annotations

import bench.run
import tests.conftest
import tools.soak
from tools import tiny_stack


def test_the_tests_soak_and_bench_share_one_engine_and_prompts():
    assert tests.conftest.ENGINE_ARGS == tiny_stack.ENGINE_ARGS
    assert tests.conftest.MODEL_NAME == tiny_stack.MODEL_NAME and tests.conftest.LORA_NAMES == tiny_stack.LORA_NAMES
    assert tuple(tests.conftest.PARITY_PROMPTS) == tiny_stack.PROMPTS == tools.soak.PROMPTS
    assert bench.run.BASE_ENGINE_ARGS is tiny_stack.BASE_ENGINE_ARGS
    lora_free = {k: v for k, v in tiny_stack.ENGINE_ARGS.items() if k not in tiny_stack.LORA_ENGINE_ARGS}
    assert lora_free == tiny_stack.BASE_ENGINE_ARGS
