"""Keep-alive HTTP/1.1 over the standard library: one connection per thread and server, each
socket operation bounded by what is left of the call's budget."""

from __future__ import annotations

import http.client
import threading
import time
from typing import NamedTuple
from urllib.parse import urlsplit

from constructos_client.errors import ConnectionFailed, Timeout


class Response(NamedTuple):
    status: int
    body: bytes


class Transport:
    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url: expected http(s)://host[:port], got {base_url!r}")
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Connection": "keep-alive", **(headers or {})}
        self._json_headers = {**self.headers, "Content-Type": "application/json"}
        self._local = threading.local()

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None:
            conn.sock.settimeout(timeout)
            return conn, True
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=timeout)
        self._local.conn = conn
        return conn, False

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None, deadline: float) -> Response:
        """One exchange; a keep-alive connection the server closed meanwhile is re-opened once
        (the request never reached it, so this is no retry)."""
        for attempt in (0, 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout("the time budget ran out before the request was sent")
            conn, reused = self._connection(left)
            try:
                headers = self.headers if body is None else self._json_headers
                conn.request(method, self.prefix + path, body=body, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                answer = conn.getresponse()
                data = answer.read()
                if answer.will_close:
                    self.close()
                return Response(answer.status, data)
            except TimeoutError:
                self.close()
                raise Timeout(f"no answer within the budget ({method} {path})") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 0:
                    continue  # the server dropped an idle connection
                raise ConnectionFailed(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise ConnectionFailed(f"{self.host}:{self.port}: {exc or type(exc).__name__}") from None
        raise AssertionError("unreachable")
