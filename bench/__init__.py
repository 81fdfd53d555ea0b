"""Side-by-side benchmark: the raw vLLM engine, `vllm serve`, and our Triton stack (frontend and gRPC direct).

Run it with `python -m bench.run [--quick]` (or `make bench`); see bench/run.py.
"""
