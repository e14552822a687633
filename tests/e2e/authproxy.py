"""A registry front that demands credentials, for the pull tests: HTTP Basic, or the
bearer-token flow Docker Hub and ECR use (401 with `WWW-Authenticate: Bearer realm=...`,
then a token from the realm). Requests that pass are proxied to a real registry."""

import base64
import http.server
import json
import secrets
import threading
import urllib.error
import urllib.request


class AuthProxy:
    def __init__(self, upstream, port, mode, username="user", password="secret"):
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.mode = mode
        self.basic = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.tokens = set()
        self.token_requests = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def deny(self):
                self.send_response(401)
                if proxy.mode == "basic":
                    self.send_header("WWW-Authenticate", 'Basic realm="estiba-test"')
                else:
                    repo = self.path.split("/v2/", 1)[-1].rsplit("/manifests/", 1)[0].rsplit("/blobs/", 1)[0]
                    self.send_header(
                        "WWW-Authenticate",
                        f'Bearer realm="http://127.0.0.1:{proxy.port}/token",service="estiba-test",scope="repository:{repo}:pull"',
                    )
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                if self.path.startswith("/token"):
                    proxy.token_requests += 1
                    if self.headers.get("Authorization") != proxy.basic:
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    tok = secrets.token_hex(16)
                    proxy.tokens.add(tok)
                    body = json.dumps({"token": tok}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.forward("GET")

            def do_HEAD(self):
                self.forward("HEAD")

            def forward(self, method):
                auth = self.headers.get("Authorization", "")
                ok = auth == proxy.basic if proxy.mode == "basic" else auth.startswith("Bearer ") and auth[7:] in proxy.tokens
                if not ok:
                    return self.deny()
                req = urllib.request.Request(proxy.upstream + self.path, method=method)
                if self.headers.get("Accept"):
                    req.add_header("Accept", self.headers["Accept"])
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, headers, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, headers, body = e.code, e.headers, e.read()
                self.send_response(status)
                for k in ("Content-Type", "Docker-Content-Digest"):
                    if headers.get(k):
                        self.send_header(k, headers[k])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
