"""One JSON line per request on stderr (`API_ACCESS_LOG`, on by default), beside the
process's other log lines and in their shape (`contracts.logs`): `timestamp`, `level`,
`logger`, `message`, and `method`, `route`, `status`, `tenant`, `latency_ms`.

It holds no token, no query string and no path: the route is the template (`/v1/jobs/{id}`),
the tenant the one the token named, when it was valid. Every field is either ours or checked
against a pattern (the tenant), so the line is written without a JSON encoder; lines are
gathered and written every `FLUSH_SECONDS` (or at `FLUSH_BYTES`), so a busy process pays a
write per batch of lines, not per request.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

FLUSH_SECONDS = 0.2
FLUSH_BYTES = 64 * 1024


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lines: list[str] = []
        self._size = 0
        self._flush_scheduled = False
        self._second = -1
        self._second_text = ""

    def request(
        self, method: str, route: str, status: int, tenant: str | None, seconds: float
    ) -> None:
        now = time.time()
        method = method if method.isalpha() else "OTHER"
        tenant_field = "null" if tenant is None else f'"{tenant}"'
        line = (
            f'{{"timestamp":"{self._timestamp(now)}","level":"INFO","logger":"api.access",'
            f'"message":"{method} {route} {status}","method":"{method}","route":"{route}",'
            f'"status":{status},"tenant":{tenant_field},"latency_ms":{seconds * 1000:.2f}}}\n'
        )
        self._lines.append(line)
        self._size += len(line)
        if self._size >= FLUSH_BYTES:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if self._lines:
            lines, self._lines, self._size = self._lines, [], 0
            self._stream.write("".join(lines))
            self._stream.flush()

    def _timestamp(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            moment = datetime.fromtimestamp(second, UTC)
            self._second, self._second_text = second, moment.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._second_text}.{int((now - second) * 1000):03d}Z"
