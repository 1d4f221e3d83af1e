"""An HTTP proxy for tests of object storage: adds latency, counts requests in flight.

It sits between the client (s3fs) and a moto server on 127.0.0.1, keeps client
connections alive (HTTP/1.1), waits ``latency`` seconds before forwarding each
request, and records how many requests were open at once, so a test can see
that a reader keeps several in flight and how many it sent.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LatencyProxy:
    """A proxy to ``target`` (``host:port``) on a free port of 127.0.0.1."""

    def __init__(self, target: str, latency: float = 0.0, backlog: int = 128) -> None:
        self.target = target
        self.latency = latency
        self.requests = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        #: Requests answered, and the most open at an arrival less those answered
        #: so far: a client that opens connections in one burst shows the burst
        #: here, one that ramps up (one more per answer) its first wave.
        self.answered = 0
        self.peak_unanswered_burst = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    proxy.requests += 1
                    proxy.in_flight += 1
                    proxy.peak_in_flight = max(proxy.peak_in_flight, proxy.in_flight)
                    burst = proxy.in_flight - proxy.answered
                    proxy.peak_unanswered_burst = max(proxy.peak_unanswered_burst, burst)
                try:
                    time.sleep(proxy.latency)
                    connection = http.client.HTTPConnection(proxy.target, timeout=60)
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    headers["Host"] = proxy.target
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    self.send_response(response.status)
                    for name, value in response.getheaders():
                        if name.lower() not in (
                            "transfer-encoding",
                            "connection",
                            "content-length",
                        ):
                            self.send_header(name, value)
                    # A HEAD response says the object's length; others, the body's.
                    length = response.getheader("Content-Length", "0")
                    sent = length if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", sent)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                    connection.close()
                finally:
                    with proxy._lock:
                        proxy.in_flight -= 1
                        proxy.answered += 1

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        class Server(ThreadingHTTPServer):
            # Connections waiting to be accepted: http.server's default of 5 drops
            # the connects of a cold burst, and the kernel retries them after 1 s.
            request_queue_size = backlog

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.peak_in_flight = 0
            self.answered = self.peak_unanswered_burst = 0

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
