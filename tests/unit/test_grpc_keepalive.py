"""The frontend's keepalive pings and the Triton server the launcher starts must agree, or Triton closes the
channel with "Too many pings" and a request fails with 503."""

from __future__ import annotations

from pathlib import Path

from frontend.triton import _CHANNEL_OPTIONS
from launcher.triton import TritonLayout, TritonPorts, TritonProcess


def _server_flags() -> dict[str, str]:
    process = TritonProcess("model_repository", TritonPorts(), Path("/tmp"))
    flags = {}
    for arg in process.command(TritonLayout(binary="tritonserver")):
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            flags[key] = value
    return flags


def test_triton_accepts_the_frontends_pings_without_calls():
    client = dict(_CHANNEL_OPTIONS)
    server = _server_flags()
    assert client["grpc.keepalive_permit_without_calls"] == 1
    assert server["grpc-keepalive-permit-without-calls"] == "1"
    assert int(server["grpc-http2-min-recv-ping-interval-without-data"]) <= client["grpc.keepalive_time_ms"]
