"""Container healthcheck: exit 0 when the frontend answers /health/ready with 200.

Reads the port and the API key the way the frontend does (frontend.settings), so closed health routes work too.
Usage: ``python3 docker/healthcheck.py [PATH]`` (default /health/ready).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from frontend.settings import parse_settings


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/health/ready"
    settings = parse_settings([])
    request = urllib.request.Request(f"http://127.0.0.1:{settings.port}{path}")
    if settings.api_key:
        request.add_header("Authorization", f"Bearer {settings.api_key}")
    try:
        with urllib.request.urlopen(request, timeout=8) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
