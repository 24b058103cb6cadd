"""A lab app replica: answers with its host and service name (and, at /headers, the request's headers).

python -m halb.lab.app --node app-1 --service shop --replica 0 --address 192.0.2.200 --port 8080

A stand-in for the user's app images (the lab cannot run those): one replica
per address, as each pod has its own IP.
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(body: bytes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if self.path == "/healthz":
                payload = b"ok\n"
            elif self.path == "/headers":
                # What reached the app: the forwarding headers the edge set, nothing a client forged.
                payload = "".join(f"{k}: {v}\n" for k, v in self.headers.items()).encode()
            else:
                payload = body
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass  # health checks every 2 s would drown the log

    return Handler


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m halb.lab.app")
    p.add_argument("--node", required=True)
    p.add_argument("--service", required=True)
    p.add_argument("--replica", type=int, default=0)
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    body = f"host={args.node} service={args.service} replica={args.replica}\n".encode()
    server = ThreadingHTTPServer((args.address, args.port), make_handler(body))
    server.daemon_threads = True
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
