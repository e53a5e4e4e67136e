#!/usr/bin/env python3
"""A minimal OTLP/HTTP receiver for benchmarks: answers every POST (/v1/traces,
/v1/logs, ...) with 200 and an empty protobuf body, and counts requests and bytes per
path. On SIGTERM it writes the counts as `path requests bytes` lines to the file named
by its second argument.

    bench/otlp_sink.py PORT COUNTS_FILE
"""
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTS = {}
LOCK = threading.Lock()


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        with LOCK:
            n, b = COUNTS.get(self.path, (0, 0))
            COUNTS[self.path] = (n + 1, b + length)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def main():
    port, counts_file = int(sys.argv[1]), sys.argv[2]
    server = ThreadingHTTPServer(("127.0.0.1", port), Sink)

    def stop(*_):
        with LOCK, open(counts_file, "w") as f:
            for path, (n, b) in sorted(COUNTS.items()):
                f.write(f"{path} {n} {b}\n")
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()


if __name__ == "__main__":
    main()
