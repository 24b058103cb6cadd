"""A lab app replica: answers with its host and service name (and, at /headers, the request's headers).

python -m halb.lab.app --node app-1 --service shop --replica 0 --address 192.0.2.200 --port 8080

A stand-in for the user's app images (the lab cannot run those): one replica
per address, as each pod has its own IP.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


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


def nginx_binary() -> str:
    """Debian's nginx as `make deps` unpacks it beside the venv (or one on PATH)."""
    unpacked = Path(sys.executable).parent.parent / "nginx" / "usr" / "sbin" / "nginx"
    return str(unpacked) if unpacked.exists() else shutil.which("nginx") or str(unpacked)


def nginx_conf(node: str, service: str, replica: int, address: str, port: int, work: Path) -> str:
    """The same answers from Debian's nginx (the data-path benchmarks' stand-in: faster
    than the edge, so the edge is what they measure). One worker, nothing on disk but `work`."""
    tmp = work / f"{node}-{service}-{replica}"
    body = f"host={node} service={service} replica={replica}\\n"
    return "\n".join([
        "worker_processes 1;",
        f"pid {tmp}.pid;",
        "events { worker_connections 4096; }",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {tmp}.body; proxy_temp_path {tmp}.proxy; fastcgi_temp_path {tmp}.fcgi;",
        f"    uwsgi_temp_path {tmp}.uwsgi; scgi_temp_path {tmp}.scgi;",
        "    keepalive_requests 1000000;",
        "    server {",
        f"        listen {address}:{port} reuseport;",
        "        default_type text/plain;",
        '        location = /healthz { return 200 "ok\\n"; }',
        '        location = /headers { return 200 "x-forwarded-for: $http_x_forwarded_for\\n'
        'x-forwarded-proto: $http_x_forwarded_proto\\n"; }',
        f'        location / {{ return 200 "{body}"; }}',
        "    }",
        "}",
        "",
    ])  # fmt: skip


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
