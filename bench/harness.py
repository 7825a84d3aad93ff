#!/usr/bin/env python3
"""Portico against nginx and HAProxy, configured alike, on loopback; writes BENCHMARKS.md.

Run through bench/run, which installs the tools and builds Portico first. Every proxy gets
the same host rule, round robin over the same two backends, upstream keep-alive, one worker
(process or thread), access logs off. Scenarios run in alternating rounds (A B C, B C A, ...)
so machine drift cancels; results are medians with min-max over the rounds.
"""
import argparse
import atexit
import datetime
import json
import os
import platform
import itertools
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import base64
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTICO = ROOT / "target" / "release" / "portico"
HOST = "bench.local"
# The "rewrite" scenario's host: in regex mode, a capture rewrite and a response header added
# by a snippet (ingress-nginx annotations), against nginx and HAProxy configured alike.
REWRITE_HOST = "rewrite.local"
# A host whose route has an allowlist (ingress-nginx's annotation) that admits the
# benchmark's client: the cost of an access check against the plain route.
ALLOW_HOST = "allow.local"
# The "basic-auth" scenario's host: basic authentication with one bcrypt (cost 10) user,
# the same htpasswd line for Portico (auth-type: basic), nginx (auth_basic) and HAProxy
# (userlist). libc's crypt() checks bcrypt on every request for nginx and HAProxy; Portico
# caches a verified credential.
AUTH_HOST = "auth.local"
# The "rate-limit" scenario's host: a per-client-address request rate limit that the load
# does not reach (Portico `limit-rps`, nginx `limit_req` with a nodelay burst, HAProxy a
# stick table of request rates): the cost of counting.
LIMIT_HOST = "limit.local"
# The "https-upstream" scenario's host: the same backends spoken to over TLS (HTTP/1.1, pooled,
# sessions resumed), nothing verified: Portico's backend-protocol HTTPS, nginx's proxy_pass
# https:// with proxy_ssl_session_reuse on, HAProxy's `ssl verify none` servers.
TLSUP_HOST = "tlsup.local"
# The "grpc" scenario's host: gRPC unary calls over HTTP/2 with TLS to the proxy, HTTP/2 in clear
# text (h2c) to two nginx backends that answer a fixed gRPC message with `grpc-status: 0` in the
# trailers: Portico's backend-protocol GRPC, nginx's grpc_pass, HAProxy's `proto h2` servers.
GRPC_HOST = "grpc.local"
GRPC_PATH = "/bench.Echo/Unary"
# A framed gRPC message (uncompressed, 5-byte prefix): field 1, "hello".
GRPC_MESSAGE = b"\x00\x00\x00\x00\x07\x0a\x05hello"
LIMIT_RPS = 1000000
# What every location of ingress-nginx's configuration sets besides X-Real-IP, X-Forwarded-For
# and X-Forwarded-Proto, and Portico sends as ingress-nginx does: nginx configured alike.
INGRESS_NGINX_HEADERS = ("proxy_set_header X-Forwarded-Host $host; proxy_set_header X-Forwarded-Port $server_port; "
                         "proxy_set_header X-Request-ID $request_id; proxy_set_header X-Scheme $scheme; "
                         "proxy_set_header Proxy \"\";")
AUTH_USER, AUTH_PASSWORD = "bench", "benchpass"
AUTH_HASH = "$2b$10$HRdGit8tCmXUNbpK5iRRnuC3.4oN3XddLt9k5YvQwnqxIMP.3Xn3u"
AUTH_HEADER = "Authorization: Basic " + base64.b64encode(f"{AUTH_USER}:{AUTH_PASSWORD}".encode()).decode()
TICK = os.sysconf("SC_CLK_TCK")
CHANGE_SPACING = 0.3  # seconds between timed configuration changes


HANDED_OUT = set()


def free_port():
    """A port nothing listens on now, and not handed out before in this run (the kernel may
    offer a port again once its probe socket is closed, before its user binds it)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in HANDED_OUT:
            HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port")


def free_port_pair():
    """Two adjacent free ports (a NodePort range of two)."""
    for _ in range(100):
        p = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 1))
            return p, p + 1
        except OSError:
            continue
    raise RuntimeError("no two adjacent free ports")


def wait_port(port, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def tree(pid):
    """pid and its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        out = subprocess.run(["pgrep", "-P", str(frontier.pop())], capture_output=True, text=True).stdout
        kids = [int(p) for p in out.split()]
        pids += kids
        frontier += kids
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            pass
    return total / TICK


def rss_mib(pids, field="VmRSS"):
    """Resident memory of these processes (VmRSS now, or VmHWM: the peak), in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Setup:
    """Certificates, backends and the three proxies, each on its own loopback ports."""

    def __init__(self, work):
        self.work = Path(work)
        # nginx workers run as an unprivileged user: the files they serve must be readable.
        os.chmod(self.work, 0o755)
        self.procs = {}
        self.ports = {}
        try:
            self.make_certificate()
            self.start_backends()
            self.start_portico()
            self.start_nginx()
            self.start_haproxy()
        except Exception:
            self.stop()
            for log in sorted(self.work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-2000:]}", file=sys.stderr)
            raise

    def make_certificate(self):
        crt, key = self.work / "tls.crt", self.work / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-newkey", "rsa:2048", "-keyout", key,
                        "-out", crt, "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}"],
                       check=True, capture_output=True)
        (self.work / "tls.pem").write_text(crt.read_text() + key.read_text())
        self.crt, self.key = crt, key

    def spawn(self, name, cmd, port, env=None):
        log = open(self.work / f"{name}.log", "w")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.procs[name] = proc
        wait_port(port)

    def nginx_conf(self, name, http_block, single_process=False):
        prefix = self.work / name
        for d in ["logs", "tmp"]:
            (prefix / d).mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""{"master_process off;" if single_process else ""}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp/body; proxy_temp_path {prefix}/tmp/proxy;
  fastcgi_temp_path {prefix}/tmp/fcgi; uwsgi_temp_path {prefix}/tmp/uwsgi; scgi_temp_path {prefix}/tmp/scgi;
  keepalive_requests 1000000;
{http_block}
}}
""")
        return ["nginx", "-p", str(prefix), "-c", str(conf)]

    def start_backends(self):
        self.backends = [free_port(), free_port()]
        self.tls_backends = [free_port(), free_port()]
        self.grpc_backends = [free_port(), free_port()]
        (self.work / "64k.bin").write_bytes(os.urandom(64 * 1024))
        os.chmod(self.work / "64k.bin", 0o644)
        (self.work / "grpc-reply.bin").write_bytes(GRPC_MESSAGE)
        os.chmod(self.work / "grpc-reply.bin", 0o644)
        os.chmod(self.key, 0o644)
        listens = "".join(f"    listen 127.0.0.1:{p};\n" for p in self.backends)
        listens += "".join(f"    listen 127.0.0.1:{p} ssl;\n" for p in self.tls_backends)
        listens += "".join(f"    listen 127.0.0.1:{p} http2;\n" for p in self.grpc_backends)
        listens += f"    ssl_certificate {self.crt}; ssl_certificate_key {self.key};\n"
        listens += "    ssl_session_cache shared:BACKEND:10m; ssl_session_tickets on;\n"
        block = f"""  server {{
{listens}    location = / {{ return 200 "hello from the backend\\n"; }}
    location = /64k {{ alias {self.work}/64k.bin; }}
    # nginx serves files to GET only: the gRPC POST is answered by an error page (as a GET),
    # after the request body is read (mirror_request_body): answering first would end the
    # stream with RST_STREAM(NO_ERROR), which nginx's own grpc_pass takes for an error.
    location = {GRPC_PATH} {{
      mirror /grpc-mirror; mirror_request_body on;
      alias {self.work}/grpc-reply.bin;
      error_page 405 =200 /grpc-reply.bin;
    }}
    location = /grpc-mirror {{ internal; return 204; }}
    location = /grpc-reply.bin {{
      internal; root {self.work};
      types {{ }} default_type application/grpc;
      add_trailer grpc-status 0;
    }}
  }}"""
        self.spawn("backends", self.nginx_conf("backends", block), self.backends[0])

    def start_portico(self):
        http, https, admin = free_port(), free_port(), free_port()
        manifests = self.work / "manifests"
        manifests.mkdir()
        indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())
        slices = "".join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-{i}, namespace: bench, labels: {{kubernetes.io/service-name: bench}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""" for i, port in enumerate(self.backends))
        (manifests / "endpoints.yaml").write_text(self.endpoints_yaml(ready_second=True))
        (manifests / "rewrite.yaml").write_text(f"""apiVersion: v1
kind: ConfigMap
metadata: {{name: portico, namespace: bench}}
data: {{allow-snippet-annotations: "true", annotations-risk-level: Critical, keep-alive-requests: "1000000"}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: rewrite
  namespace: bench
  annotations:
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/rewrite-target: /$2
    nginx.ingress.kubernetes.io/configuration-snippet: "add_header X-Rewritten yes;"
spec:
  ingressClassName: portico
  rules:
    - host: {REWRITE_HOST}
      http: {{paths: [{{path: "/app(/|$)(.*)", pathType: ImplementationSpecific, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}
""")
        (manifests / "auth.yaml").write_text(f"""apiVersion: v1
kind: Secret
metadata: {{name: bench-users, namespace: bench}}
type: Opaque
stringData: {{auth: "{AUTH_USER}:{AUTH_HASH}"}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: auth
  namespace: bench
  annotations:
    portico.dev/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: bench-users
    nginx.ingress.kubernetes.io/auth-realm: bench
spec:
  ingressClassName: portico
  rules:
    - host: {AUTH_HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}
""")
        tls_slices = "".join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-tls-{i}, namespace: bench, labels: {{kubernetes.io/service-name: bench-tls}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""" for i, port in enumerate(self.tls_backends))
        (manifests / "tlsup.yaml").write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: bench-tls, namespace: bench}}
spec: {{ports: [{{port: 443}}]}}
{tls_slices}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: tlsup
  namespace: bench
  annotations:
    portico.dev/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/backend-protocol: HTTPS
spec:
  ingressClassName: portico
  rules:
    - host: {TLSUP_HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench-tls, port: {{number: 443}}}}}}}}]}}
""")
        grpc_slices = "".join(f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-grpc-{i}, namespace: bench, labels: {{kubernetes.io/service-name: bench-grpc}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""" for i, port in enumerate(self.grpc_backends))
        (manifests / "grpc.yaml").write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: bench-grpc, namespace: bench}}
spec: {{ports: [{{port: 80}}]}}
{grpc_slices}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: grpc
  namespace: bench
  annotations:
    portico.dev/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/backend-protocol: GRPC
spec:
  ingressClassName: portico
  rules:
    - host: {GRPC_HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench-grpc, port: {{number: 80}}}}}}}}]}}
""")
        (manifests / "limit.yaml").write_text(f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limit
  namespace: bench
  annotations:
    portico.dev/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/limit-rps: "{LIMIT_RPS}"
spec:
  ingressClassName: portico
  rules:
    - host: {LIMIT_HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}
""")
        (manifests / "allow.yaml").write_text(f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: allow
  namespace: bench
  annotations:
    portico.dev/ssl-redirect: "false"
    nginx.ingress.kubernetes.io/whitelist-source-range: "10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 127.0.0.1, 2001:db8::/32"
spec:
  ingressClassName: portico
  rules:
    - host: {ALLOW_HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}
""")
        (manifests / "bench.yaml").write_text(f"""apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portico}}
spec: {{controller: portico.dev/ingress-controller}}
---
apiVersion: v1
kind: Service
metadata: {{name: bench, namespace: bench}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Secret
metadata: {{name: bench-tls, namespace: bench}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(self.crt.read_text())}  tls.key: |
{indent(self.key.read_text())}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  namespace: bench
  annotations: {{portico.dev/ssl-redirect: "false"}}
spec:
  ingressClassName: portico
  tls: [{{hosts: [{HOST}], secretName: bench-tls}}]
  rules:
    - host: {HOST}
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}
""")
        # A NodePort Service on the same backends, for the L4 scenarios; and one on an iperf3
        # server, for a bulk TCP stream.
        self.node_port, self.bulk_node_port = free_port_pair()
        (manifests / "nodeport.yaml").write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: bench-np, namespace: bench}}
spec: {{type: NodePort, ports: [{{port: 80, nodePort: {self.node_port}}}]}}
""" + slices.replace("name: bench-", "name: bench-np-").replace("service-name: bench}", "service-name: bench-np}"))
        self.iperf = free_port()
        (manifests / "bulk.yaml").write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: bulk, namespace: bench}}
spec: {{type: NodePort, ports: [{{port: 5201, nodePort: {self.bulk_node_port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bulk, namespace: bench, labels: {{kubernetes.io/service-name: bulk}}}}
addressType: IPv4
ports: [{{port: {self.iperf}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""")
        cmd = self.portico_cmd(manifests, http, https, admin) + [
            "--proxy-nodeports", "--node-address", "127.0.0.1",
            "--service-node-port-range", f"{self.node_port}-{self.bulk_node_port}"]
        # A WebSocket echo backend (`portico echo`) behind Exact /ws on the same host, for the churn run.
        ws = free_port()
        self.spawn("ws-echo", [str(PORTICO), "echo", "--listen", f"127.0.0.1:{ws}", "--threads", "1"], ws,
                   env={**os.environ, "RUST_LOG": "warn"})
        (manifests / "ws.yaml").write_text(f"""apiVersion: v1
kind: Service
metadata: {{name: ws, namespace: bench, annotations: {{portico.dev/ssl-redirect: "false"}}}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: ws, namespace: bench, labels: {{kubernetes.io/service-name: ws}}}}
addressType: IPv4
ports: [{{port: {ws}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ws, namespace: bench, annotations: {{portico.dev/ssl-redirect: "false"}}}}
spec:
  ingressClassName: portico
  rules: [{{host: {HOST}, http: {{paths: [{{path: /ws, pathType: Exact, backend: {{service: {{name: ws, port: {{number: 80}}}}}}}}]}}}}]
""")
        self.manifests, self.admin = manifests, admin
        self.spawn("portico", cmd, http, env={**os.environ, "RUST_LOG": "warn"})
        # Wait for the first snapshot: the route answers.
        for _ in range(100):
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {HOST}",
                                  f"http://127.0.0.1:{http}/"], capture_output=True, text=True).stdout
            if out == "200":
                break
            time.sleep(0.05)
        self.ports["portico"] = (http, https)

    @staticmethod
    def portico_cmd(manifests, http, https, admin):
        return [str(PORTICO), "--manifests", str(manifests), "--threads", "1", "--access-log", "false",
                "--http-addr", f"127.0.0.1:{http}", "--https-addr", f"127.0.0.1:{https}",
                "--admin-addr", f"127.0.0.1:{admin}", "--configmap", "bench/portico"]

    def endpoints_yaml(self, ready_second):
        """The bench Service's two EndpointSlices; the second backend ready or not."""
        docs = []
        for i, port in enumerate(self.backends):
            ready = "true" if i == 0 or ready_second else "false"
            docs.append(f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: bench-{i}, namespace: bench, labels: {{kubernetes.io/service-name: bench}}}}
addressType: IPv4
ports: [{{port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: {ready}}}}}]
""")
        return "---\n".join(docs)

    def start_nginx(self):
        http, https = free_port(), free_port()
        self.spawn("nginx", self.nginx_conf("nginx", self.nginx_block(http, https)), http)
        self.ports["nginx"] = (http, https)

    def nginx_block(self, http, https):
        """nginx's proxy configuration: the same rules as Portico's, and the fields every
        location of ingress-nginx's configuration sets, which Portico sends too (a request ID,
        X-Forwarded-Host, X-Forwarded-Port)."""
        servers = "".join(f"server 127.0.0.1:{p}; " for p in self.backends)
        tls_servers = "".join(f"server 127.0.0.1:{p}; " for p in self.tls_backends)
        grpc_servers = "".join(f"server 127.0.0.1:{p}; " for p in self.grpc_backends)
        return f"""  upstream bench {{ {servers}keepalive 256; }}
  upstream bench_tls {{ {tls_servers}keepalive 256; }}
  upstream bench_grpc {{ {grpc_servers}keepalive 256; }}
  server {{
    listen 127.0.0.1:{https} ssl http2;
    server_name {GRPC_HOST};
    ssl_certificate {self.crt}; ssl_certificate_key {self.key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / {{
      grpc_pass grpc://bench_grpc;
      grpc_set_header X-Real-IP $remote_addr; grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Proto $scheme;
    }}
  }}
  server {{
    listen 127.0.0.1:{http};
    server_name {TLSUP_HOST};
    location / {{
      proxy_pass https://bench_tls; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_session_reuse on;
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      {INGRESS_NGINX_HEADERS}
    }}
  }}
  limit_req_zone $binary_remote_addr zone=bench_rps:5m rate={LIMIT_RPS}r/s;
  server {{
    listen 127.0.0.1:{http};
    server_name {LIMIT_HOST};
    location / {{
      limit_req zone=bench_rps burst={LIMIT_RPS * 5} nodelay;
      proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      {INGRESS_NGINX_HEADERS}
    }}
  }}
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl http2;
    server_name {HOST};
    ssl_certificate {self.crt}; ssl_certificate_key {self.key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; ssl_session_tickets on;
    location / {{
      proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      {INGRESS_NGINX_HEADERS}
    }}
  }}
  server {{
    listen 127.0.0.1:{http};
    server_name {AUTH_HOST};
    location / {{
      auth_basic bench; auth_basic_user_file {self.htpasswd()};
      proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header Authorization "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      {INGRESS_NGINX_HEADERS}
    }}
  }}
  server {{
    listen 127.0.0.1:{http};
    server_name {REWRITE_HOST};
    location ~* "^/app(/|$)(.*)" {{
      rewrite "(?i)/app(/|$)(.*)" /$2 break;
      add_header X-Rewritten yes;
      proxy_pass http://bench; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; proxy_set_header X-Forwarded-Proto $scheme;
      {INGRESS_NGINX_HEADERS}
    }}
  }}"""

    def htpasswd(self):
        """The basic-auth scenario's htpasswd file (nginx's auth_basic_user_file)."""
        path = self.work / "htpasswd"
        path.write_text(f"{AUTH_USER}:{AUTH_HASH}\n")
        os.chmod(path, 0o644)
        return path

    def start_haproxy(self):
        http, https = free_port(), free_port()
        servers = "".join(f"  server b{i} 127.0.0.1:{p}\n" for i, p in enumerate(self.backends))
        tls_servers = "".join(f"  server t{i} 127.0.0.1:{p} ssl verify none\n"
                              for i, p in enumerate(self.tls_backends))
        grpc_servers = "".join(f"  server g{i} 127.0.0.1:{p} proto h2\n"
                               for i, p in enumerate(self.grpc_backends))
        conf = self.work / "haproxy.cfg"
        conf.write_text(f"""global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:{http}
  bind 127.0.0.1:{https} ssl crt {self.work}/tls.pem alpn h2,http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-ID %[uuid]
  http-request set-header X-Scheme http if !{{ ssl_fc }}
  http-request set-header X-Scheme https if {{ ssl_fc }}
  http-request del-header Proxy
  acl bench hdr(host) -i {HOST}
  acl rewrite hdr(host) -i {REWRITE_HOST}
  acl auth hdr(host) -i {AUTH_HOST}
  acl limited hdr(host) -i {LIMIT_HOST}
  acl tlsup hdr(host) -i {TLSUP_HOST}
  acl grpc hdr(host) -i {GRPC_HOST}
  stick-table type ip size 100k expire 30s store http_req_rate(1s)
  http-request track-sc0 src if limited
  http-request deny deny_status 503 if limited {{ sc_http_req_rate(0) gt {LIMIT_RPS * 5} }}
  http-request auth realm bench if auth !{{ http_auth(bench_users) }}
  http-request del-header Authorization if auth
  acl app path_reg -i ^/app(/|$)
  http-request set-var(txn.rewritten) bool(true) if rewrite app
  http-request replace-path (?i)^/app(/|$)(.*) /\\2 if rewrite app
  http-response set-header X-Rewritten yes if {{ var(txn.rewritten) -m bool }}
  use_backend be_tls if tlsup
  use_backend be_grpc if grpc
  use_backend be if bench
  use_backend be if auth
  use_backend be if limited
  use_backend be if {{ var(txn.rewritten) -m bool }}
backend be
  balance roundrobin
{servers}backend be_tls
  balance roundrobin
{tls_servers}backend be_grpc
  balance roundrobin
{grpc_servers}userlist bench_users
  user {AUTH_USER} password {AUTH_HASH}
""")
        self.spawn("haproxy", ["haproxy", "-db", "-f", str(conf)], http)
        self.ports["haproxy"] = (http, https)

    def start_l4_proxies(self):
        """nginx `stream {}` and HAProxy `mode tcp` in front of the same two backends (round robin,
        one worker each), for the L4 comparison: what other user-space TCP proxies reach here."""
        self.l4_ports = {}
        module = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
        built_in = "--with-stream " in subprocess.run(["nginx", "-V"], capture_output=True, text=True).stderr + " "
        if built_in or module.exists():
            port, prefix = free_port(), self.work / "nginx-stream"
            (prefix / "logs").mkdir(parents=True, exist_ok=True)
            servers = "".join(f"server 127.0.0.1:{p}; " for p in self.backends)
            conf = prefix / "nginx.conf"
            conf.write_text(f"""{"" if built_in else f"load_module {module};"}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 16384; }}
stream {{
  upstream l4 {{ {servers}}}
  server {{ listen 127.0.0.1:{port}; proxy_pass l4; }}
}}
""")
            self.spawn("nginx-stream", ["nginx", "-p", str(prefix), "-c", str(conf)], port)
            self.l4_ports["nginx-stream"] = port
        else:
            print("nginx has no stream module (apt-get install libnginx-mod-stream): skipping nginx stream", file=sys.stderr)
        port = free_port()
        servers = "".join(f"  server b{i} 127.0.0.1:{p}\n" for i, p in enumerate(self.backends))
        conf = self.work / "haproxy-tcp.cfg"
        conf.write_text(f"""global
  nbthread 1
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend l4
  bind 127.0.0.1:{port}
  default_backend l4
backend l4
  balance roundrobin
{servers}""")
        self.spawn("haproxy-tcp", ["haproxy", "-db", "-f", str(conf)], port)
        self.l4_ports["haproxy-tcp"] = port
        self.spawn("iperf3", ["iperf3", "-s", "-p", str(self.iperf)], self.iperf)

    def pids(self, name):
        return tree(self.procs[name].pid)

    def stop(self):
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_wrk(out):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "requests": total, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors}


def parse_h2load(out, log=None):
    """h2load's summary; with `log` (its --log-file: start, status, elapsed µs per request),
    the p50 and p99 latencies too."""
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    done, failed, errored = int(m.group(2)), int(m.group(4)), int(m.group(5))
    mean = re.search(r"time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)", out)
    p50 = p99 = None
    if log is not None and log.exists():
        times = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") == 2)
        log.unlink()
        if times:
            p50 = times[len(times) // 2] / 1000.0
            p99 = times[min(len(times) - 1, len(times) * 99 // 100)] / 1000.0
    return {"rps": rps, "requests": done, "p50": p50, "p99": p99,
            "mean": float(mean.group(1)) * UNITS[mean.group(2)] if mean else None, "errors": failed + errored}


H2LOAD_FILES = Path(tempfile.mkdtemp(prefix="portico-bench-h2load-"))
atexit.register(shutil.rmtree, H2LOAD_FILES, True)
H2LOAD_RUNS = itertools.count()


def h2load(args, url):
    """An h2load command that logs each request's latency, and its parser."""
    log = H2LOAD_FILES / f"log-{next(H2LOAD_RUNS)}"
    return (["h2load", "-t1", "-c50", "-m10"] + args + ["--log-file", str(log), url],
            lambda out: parse_h2load(out, log))


def parse_s_time(out, seconds):
    m = re.search(r"(\d+) connections in (\d+) real seconds", out)
    conns = int(m.group(1)) if m else 0
    return {"rps": conns / max(int(m.group(2)) if m else seconds, 1), "requests": conns, "p50": None, "p99": None,
            "errors": 0 if m else 1}


def grpc_request():
    """The file h2load sends as each gRPC call's body."""
    path = H2LOAD_FILES / "grpc-request.bin"
    if not path.exists():
        path.write_bytes(GRPC_MESSAGE)
    return path


def scenarios(seconds):
    d = str(seconds)
    wrk = ["wrk", "-t1", "-c32", "-d" + d, "--latency", "-H", f"Host: {HOST}"]
    return {
        "http1": ("HTTP/1.1 keep-alive, small responses", lambda p: (wrk + [f"http://127.0.0.1:{p[0]}/"], parse_wrk)),
        "https": ("HTTPS keep-alive (HTTP/1.1), small responses", lambda p: (wrk + [f"https://127.0.0.1:{p[1]}/"], parse_wrk)),
        "h2": ("HTTP/2 over TLS (h2load, 50 connections x 10 streams)", lambda p: h2load(
            ["-D", d, "--warm-up-time=1", "-H", f":authority: {HOST}"], f"https://127.0.0.1:{p[1]}/")),
        "grpc": ("gRPC unary calls over HTTP/2 with TLS, h2c to the endpoints (h2load, 50 connections x 10 streams)",
                 lambda p: h2load(["-D", d, "--warm-up-time=1", "-d", str(grpc_request()), "-H", f":authority: {GRPC_HOST}",
                                   "-H", "content-type: application/grpc", "-H", "te: trailers"],
                                  f"https://127.0.0.1:{p[1]}{GRPC_PATH}")),
        "64k": ("64 KiB responses, HTTP/1.1 keep-alive", lambda p: (wrk + [f"http://127.0.0.1:{p[0]}/64k"], parse_wrk)),
        "rewrite": ("rewrite: a regex host with a capture rewrite and a response header added by snippet (HTTP/1.1 keep-alive)",
                    lambda p: (["wrk", "-t1", "-c32", "-d" + d, "--latency", "-H", f"Host: {REWRITE_HOST}",
                                f"http://127.0.0.1:{p[0]}/app/"], parse_wrk)),
        "basic-auth": ("basic auth, one bcrypt (cost 10) user, right credentials on every request (HTTP/1.1 keep-alive)",
                       lambda p: (["wrk", "-t1", "-c32", "-d" + d, "--latency", "-H", f"Host: {AUTH_HOST}",
                                   "-H", AUTH_HEADER, f"http://127.0.0.1:{p[0]}/"], parse_wrk)),
        "https-upstream": ("HTTPS to the endpoints (HTTP/1.1 keep-alive client, pooled TLS upstream connections)",
                           lambda p: (["wrk", "-t1", "-c32", "-d" + d, "--latency", "-H", f"Host: {TLSUP_HOST}",
                                       f"http://127.0.0.1:{p[0]}/"], parse_wrk)),
        "rate-limit": (f"a per-address rate limit the load does not reach ({LIMIT_RPS:,} r/s, HTTP/1.1 keep-alive)",
                       lambda p: (["wrk", "-t1", "-c32", "-d" + d, "--latency", "-H", f"Host: {LIMIT_HOST}",
                                   f"http://127.0.0.1:{p[0]}/"], parse_wrk)),
        "tls-new": ("a new TLS connection per request (wrk, Connection: close)", lambda p: (
            ["wrk", "-t1", "-c8", "-d" + d, "--latency", "-H", f"Host: {HOST}", "-H", "Connection: close",
             f"https://127.0.0.1:{p[1]}/"], parse_wrk)),
        "tls-full": ("TLS handshakes/s, full (openssl s_time -new)", lambda p: (
            ["openssl", "s_time", "-connect", f"127.0.0.1:{p[1]}", "-new", "-time", d],
            lambda out: parse_s_time(out, seconds))),
        "tls-resumed": ("TLS handshakes/s, resumed (openssl s_time -reuse)", lambda p: (
            ["openssl", "s_time", "-connect", f"127.0.0.1:{p[1]}", "-reuse", "-time", d],
            lambda out: parse_s_time(out, seconds))),
    }


L4_TARGETS = {"direct": "backends", "nodeport": "portico", "nginx-stream": "nginx-stream", "haproxy-tcp": "haproxy-tcp"}
L4_CASES = {"throughput": ("/64k", []), "connections": ("/", ["-H", "Connection: close"])}


def l4_runs(setup, rounds, seconds):
    """TCP straight to a backend, through Portico's NodePort, nginx `stream {}` and HAProxy
    `mode tcp`: 64 KiB responses over keep-alive (throughput) and a new connection per request
    (connections/s). Targets alternate per round; CPU is the serving processes' (for direct,
    the backends')."""
    setup.start_l4_proxies()
    targets = {"direct": setup.backends[0], "nodeport": setup.node_port, **setup.l4_ports}
    names = list(targets)
    results = {(c, t): [] for c in L4_CASES for t in targets}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for case, (path, extra) in L4_CASES.items():
            for target in order:
                cmd = ["wrk", "-t1", "-c32", f"-d{seconds}", "--latency", *extra, f"http://127.0.0.1:{targets[target]}{path}"]
                pids = setup.pids(L4_TARGETS[target])
                cpu0 = cpu_seconds(pids)
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
                cpu = cpu_seconds(pids) - cpu0
                result = parse_wrk(out.stdout)
                result["cpu_us"] = cpu / result["requests"] * 1e6 if result["requests"] else None
                results[(case, target)].append(result)
                print(f"round {r + 1} l4-{case:11} {target:12} {result['rps']:>12,.0f} req/s  errors {result['errors']}", flush=True)
        # One bulk TCP stream each way (iperf3): straight to the iperf3 server, and through the
        # NodePort whose only endpoint it is.
        bulk = {"direct": setup.iperf, "nodeport": setup.bulk_node_port}
        for target in (list(bulk) if r % 2 == 0 else list(reversed(bulk))):
            for direction, flag in [("up", []), ("down", ["-R"])]:
                cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(bulk[target]), "-t", str(seconds), "-J", *flag]
                pids = setup.pids("portico") if target == "nodeport" else []
                cpu0 = cpu_seconds(pids)
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
                cpu = cpu_seconds(pids) - cpu0
                try:
                    end = json.loads(out.stdout)["end"]
                    gbits, nbytes = end["sum_received"]["bits_per_second"] / 1e9, end["sum_received"]["bytes"]
                except (ValueError, KeyError):
                    gbits, nbytes = 0.0, 0
                results.setdefault((f"bulk-{direction}", target), []).append(
                    {"gbits": gbits, "cpu_per_gib": cpu / (nbytes / 2**30) if nbytes and pids else None})
                print(f"round {r + 1} l4-bulk-{direction:6} {target:12} {gbits:>8.2f} Gbit/s", flush=True)
    return results


def ingresses_yaml(prefix, count):
    docs = []
    for i in range(count):
        docs.append(f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {prefix}-{i}, namespace: bench}}
spec:
  ingressClassName: portico
  rules: [{{host: {prefix}-{i}.bench, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}]}}}}]
""")
    return "---\n".join(docs)


def wait_routed(port, host, limit=30.0, path="/"):
    """Polls until a request for `host` is routed (not 404); returns when it was first seen."""
    import http.client
    deadline = time.monotonic() + limit
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    while time.monotonic() < deadline:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        response.read()
        if response.status != 404:
            return time.monotonic()
    raise RuntimeError(f"{host} was not routed within {limit} s")


def propagation(setup, sizes, changes):
    """Time from a manifest file written to the first request that sees it, with `size`
    Ingresses present; and Portico's RSS at each size."""
    port, out = setup.ports["portico"][0], {}
    for size in sizes:
        (setup.manifests / "scale.yaml").write_text(ingresses_yaml("scale", size))
        wait_routed(port, f"scale-{size - 1}.bench", limit=120)
        samples = []
        for k in range(changes):
            tmp, final = setup.manifests / f".change-{size}-{k}.tmp", setup.manifests / f"change-{size}-{k}.yaml"
            tmp.write_text(ingresses_yaml(f"change-{size}-{k}", 1))
            # Isolated changes, as people make them: apart by more than the controller's quiet
            # period (bursts are what the churn measurement is for).
            time.sleep(CHANGE_SPACING)
            start = time.monotonic()
            os.rename(tmp, final)
            samples.append((wait_routed(port, f"change-{size}-{k}-0.bench") - start) * 1e3)
        samples.sort()
        rss = rss_mib(setup.pids("portico"))
        out[size] = (statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))], max(samples), rss)
        print(f"propagation {size:>6} Ingresses: median {out[size][0]:.1f} ms, p99 {out[size][1]:.1f} ms, RSS {rss:.1f} MiB", flush=True)
        for f in setup.manifests.glob("change-*.yaml"):
            f.unlink()
    return out


def first_routed(port, host, limit):
    """Polls (through connection refusals: the port is not bound yet) until a request for
    `host` is routed; returns when."""
    import http.client
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=limit)
            conn.request("GET", "/", headers={"Host": host})
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status != 404:
                return time.monotonic()
        except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
            time.sleep(0.002)
    raise RuntimeError(f"{host} was not routed within {limit} s")


def startup(setup, sizes, runs):
    """Time from starting a second Portico on a manifests directory with `size` Ingresses (the
    bench manifests plus the propagation measurement's Ingresses) to its first routed request for
    the last of them, which needs the first snapshot published; `runs` starts per size."""
    out = {}
    for size in sizes:
        d = setup.work / f"startup-{size}"
        d.mkdir(exist_ok=True)
        for name in ("bench.yaml", "endpoints.yaml"):
            (d / name).write_text((setup.manifests / name).read_text())
        (d / "scale.yaml").write_text(ingresses_yaml("scale", size))
        samples = []
        for _ in range(runs):
            http, https, admin = free_port(), free_port(), free_port()
            start = time.monotonic()
            proc = subprocess.Popen(setup.portico_cmd(d, http, https, admin), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
            try:
                samples.append((first_routed(http, f"scale-{size - 1}.bench", 120) - start) * 1e3)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        out[size] = (statistics.median(samples), max(samples))
        print(f"startup {size:>6} Ingresses: median {out[size][0]:.0f} ms, max {out[size][1]:.0f} ms", flush=True)
    return out


COST_REQUESTS = (4000, 14000)  # two runs: the difference cancels start-up and shutdown


def h1_requests(port, n, host=None, path="/"):
    """n HTTP/1.1 keep-alive requests over 8 connections (h2load --h1: a fixed count, not a time)."""
    out = subprocess.run(["h2load", "--h1", "-n", str(n), "-c", "8", "-t1", "-H", f":authority: {host or HOST}",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=600).stdout
    m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    if not m or int(m.group(1)) != n:
        raise RuntimeError(f"h2load: not every request succeeded:\n{out}")


def instructions_per_request(setup, name, host=None, path="/"):
    """User-space instructions per proxied HTTP/1.1 request, from callgrind: the difference
    between two runs of different lengths, divided by the difference in requests. Callgrind
    counts instructions, so the figure does not depend on what else the machine is doing."""
    totals = []
    for n in COST_REQUESTS:
        port, outfile = free_port(), setup.work / f"callgrind-{name}-{n}.out"
        if name == "portico":
            cmd = setup.portico_cmd(setup.manifests, port, free_port(), free_port())
        else:
            cmd = setup.nginx_conf(f"nginx-callgrind-{n}", setup.nginx_block(port, free_port()), single_process=True)
        log = open(setup.work / f"callgrind-{name}-{n}.log", "w")
        proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={outfile}", *cmd],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_port(port, timeout=120)
            wait_routed(port, host or HOST, limit=120, path=path)
            h1_requests(port, n, host, path)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        totals.append(int(re.search(r"^summary: (\d+)", outfile.read_text(), re.M).group(1)))
    return (totals[1] - totals[0]) / (COST_REQUESTS[1] - COST_REQUESTS[0])


def syscalls_per_request(setup, name, n=20000):
    """System calls per proxied HTTP/1.1 request (strace -c on the running proxy), by call."""
    report = setup.work / f"strace-{name}.txt"
    pids = setup.pids(name)
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(report)] + [a for p in pids for a in ("-p", str(p))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        h1_requests(setup.ports[name][0], n)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    calls = {}
    for line in report.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0].replace(".", "").isdigit() and f[-1] != "total":
            calls[f[-1]] = int(f[3]) / n
    return calls


def costs(setup):
    """Where a proxied request's CPU goes, Portico against nginx."""
    out = {}
    for name in ["portico", "nginx"]:
        out[name] = {"instructions": instructions_per_request(setup, name),
                     "syscalls": syscalls_per_request(setup, name)}
        sc = out[name]["syscalls"]
        print(f"costs {name:8} {out[name]['instructions']:,.0f} instructions/request, "
              f"{sum(sc.values()):.2f} syscalls/request", flush=True)
    return out


def generation(setup):
    """The published snapshot generation, from Portico's /metrics."""
    import urllib.request
    text = urllib.request.urlopen(f"http://127.0.0.1:{setup.admin}/metrics", timeout=5).read().decode()
    return int(float(re.search(r"^portico_snapshot_generation (\S+)", text, re.M).group(1)))


def churn_routes_yaml(k):
    """The bench host's extra Ingress: a different set of paths at each change."""
    paths = ", ".join(f"{{path: /churn-{k}-{j}, pathType: Prefix, backend: {{service: {{name: bench, port: {{number: 80}}}}}}}}"
                      for j in range(1 + k % 5))
    return f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: churn, namespace: bench, annotations: {{portico.dev/ssl-redirect: "false"}}}}
spec:
  ingressClassName: portico
  rules: [{{host: {HOST}, http: {{paths: [{paths}]}}}}]
"""


def write_atomically(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


class WebSocketProbe:
    """A WebSocket held open through Portico during a run, echoing a message now and then."""

    def __init__(self, port):
        from websockets.sync.client import connect
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.ws = connect(f"ws://{HOST}/ws", sock=sock, open_timeout=5, close_timeout=2)
        self.sent = self.echoed = 0
        self.error = None

    def ping(self):
        if self.error:
            return
        try:
            message = f"churn {self.sent}"
            self.sent += 1
            self.ws.send(message)
            if self.ws.recv(timeout=5) == message:
                self.echoed += 1
        except Exception as e:  # the connection died: that is the finding
            self.error = f"{type(e).__name__}: {e}"

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass


def churn(setup, seconds, rate):
    """The same load (wrk, HTTP/1.1 keep-alive, 32 connections) without and then with the
    configuration changing `rate` times a second: the bench host's routes and the bench
    Service's endpoints in turn. A WebSocket stays open through the churn run."""
    port = setup.ports["portico"][0]
    cmd = ["wrk", "-t1", "-c32", f"-d{seconds}", "--latency", "-H", f"Host: {HOST}", f"http://127.0.0.1:{port}/"]
    out = {"command": " ".join(cmd).replace(str(port), "HTTP_PORT")}
    out["steady"] = parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout)
    print(f"churn       steady   {out['steady']['rps']:>12,.0f} req/s  errors {out['steady']['errors']}", flush=True)
    probe = WebSocketProbe(port)
    gen0 = generation(setup)
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start, changes, next_ping = time.monotonic(), 0, 0.0
    routes, endpoints = setup.manifests / "churn-routes.yaml", setup.manifests / "endpoints.yaml"
    try:
        while time.monotonic() - start < seconds - 0.5 and changes < seconds * rate:
            if changes % 2 == 0:
                write_atomically(routes, churn_routes_yaml(changes // 2))
            else:
                write_atomically(endpoints, setup.endpoints_yaml(ready_second=(changes // 2) % 2 == 1))
            changes += 1
            elapsed = time.monotonic() - start
            if elapsed >= next_ping:
                probe.ping()
                next_ping += 1.0
            time.sleep(max(0.0, start + changes / rate - time.monotonic()))
        load_out = load.communicate(timeout=seconds + 60)[0]
    finally:
        if load.poll() is None:
            load.kill()
    probe.ping()
    out["churn"] = parse_wrk(load_out)
    out["changes"], out["generations"] = changes, generation(setup) - gen0
    out["ws"] = (probe.sent, probe.echoed, probe.error)
    probe.close()
    routes.unlink(missing_ok=True)
    write_atomically(endpoints, setup.endpoints_yaml(ready_second=True))
    print(f"churn       churn    {out['churn']['rps']:>12,.0f} req/s  errors {out['churn']['errors']}  "
          f"{changes} changes, {out['generations']} snapshots published, WebSocket {probe.echoed}/{probe.sent} echoed"
          f"{', ' + probe.error if probe.error else ''}", flush=True)
    return out


def run_one(setup, proxy, scenario, seconds):
    cmd, parse = scenario(setup.ports[proxy])
    pids = setup.pids(proxy)
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    cpu = cpu_seconds(pids) - cpu0
    result = parse(out.stdout + out.stderr)
    result["cpu_us"] = cpu / result["requests"] * 1e6 if result["requests"] else None
    return result, " ".join(cmd)


def med(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def fmt(triple, digits=0):
    if triple is None:
        return "-"
    m, lo, hi = triple
    return f"{m:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--propagation", default="10,1000,10000", help="Ingress counts ('' to skip)")
    ap.add_argument("--changes", type=int, default=30, help="changes timed per count")
    ap.add_argument("--startup", default="10000", help="Ingress counts timed from start to first routed request ('' to skip)")
    ap.add_argument("--startup-runs", type=int, default=5, help="starts per count")
    ap.add_argument("--costs", type=int, default=1, help="measure instructions and syscalls per request (0: skip)")
    ap.add_argument("--churn-seconds", type=int, default=60, help="length of each churn run (0 to skip)")
    ap.add_argument("--churn-rate", type=int, default=10, help="configuration changes per second")
    ap.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"), help="where the report goes")
    args = ap.parse_args()
    all_scenarios = scenarios(args.seconds)
    chosen = [s for s in (args.only or list(all_scenarios)) if s in all_scenarios]
    proxies = ["portico", "nginx", "haproxy"]
    results = {(s, p): [] for s in chosen for p in proxies}
    commands = {}
    with tempfile.TemporaryDirectory(prefix="portico-bench-") as work:
        setup = Setup(work)
        try:
            for r in range(args.rounds):
                order = proxies[r % 3:] + proxies[:r % 3]
                for name in chosen:
                    for proxy in order:
                        result, cmd = run_one(setup, proxy, all_scenarios[name][1], args.seconds)
                        results[(name, proxy)].append(result)
                        commands.setdefault(name, cmd.replace(str(setup.ports[proxy][0]), "HTTP_PORT").replace(str(setup.ports[proxy][1]), "HTTPS_PORT").replace(str(H2LOAD_FILES), "TMP"))
                        print(f"round {r + 1} {name:12} {proxy:8} {result['rps']:>12,.0f} req/s  errors {result['errors']}", flush=True)
            rss = {p: rss_mib(setup.pids(p), "VmHWM") for p in proxies}
            cost = costs(setup) if args.costs and (not args.only or "costs" in args.only) else None
            l4 = l4_runs(setup, args.rounds, args.seconds) if not args.only or "l4" in args.only else {}
            sizes = [int(x) for x in args.propagation.split(",")] if args.propagation else []
            churned = churn(setup, args.churn_seconds, args.churn_rate) if args.churn_seconds else None
            prop = propagation(setup, sizes, args.changes) if sizes else {}
            starts = [int(x) for x in args.startup.split(",")] if args.startup else []
            started = startup(setup, starts, args.startup_runs) if starts else {}
        finally:
            setup.stop()
    report = render(args, chosen, all_scenarios, proxies, results, commands, rss, l4, prop, churned, cost, started)
    print(report)
    Path(args.output).write_text(report)


def sysctl(name):
    try:
        return Path("/proc/sys", name).read_text().strip()
    except OSError:
        return "?"


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")
    version = lambda cmd: subprocess.run(cmd, capture_output=True, text=True).stdout.strip() or subprocess.run(cmd, capture_output=True, text=True).stderr.strip()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return [
        f"- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs ({cpu}), {int(mem) // 1024} MiB, Linux {platform.release()}, "
        f"TCP congestion control {sysctl('net/ipv4/tcp_congestion_control')}, default qdisc {sysctl('net/core/default_qdisc')}",
        f"- Portico {rev} (release build), {version(['nginx', '-v']).splitlines()[0]}, "
        f"{version(['haproxy', '-v']).splitlines()[0].split(' - ')[0]}, {version(['wrk', '-v']).splitlines()[0].split(' Copyright')[0]}, "
        f"{version(['h2load', '--version']).splitlines()[0]}, {version(['openssl', 'version'])}",
    ]


def render(args, chosen, all_scenarios, proxies, results, commands, rss, l4, prop, churned, cost, started):
    lines = ["# Benchmarks", "", "Printed by `bench/run` (this file is its output; only figures it measured are here).", ""]
    lines += machine()
    lines += [f"- Rounds: {args.rounds}, {args.seconds} s per run, proxies alternating (A B C, B C A, C A B); "
              "figures are medians with min-max over the rounds.",
              "- Same setup for all three: host rule `bench.local`, round robin over two nginx backends on loopback, "
              "upstream keep-alive, one worker (nginx `worker_processes 1`, HAProxy `nbthread 1`, Portico `--threads 1`), "
              "access logs off, the same RSA 2048 certificate, TLS 1.2+1.3 with session cache and tickets, "
              "and the fields ingress-nginx sets on every proxied request (X-Request-ID, X-Real-IP, "
              "X-Forwarded-For, -Host, -Port, -Proto, X-Scheme; Proxy cleared), which Portico sends as ingress-nginx does.",
              "- Load generator, backends and proxy share the machine's CPUs: absolute figures are low; the ratios are the point.",
              ""]
    for name in chosen:
        title = all_scenarios[name][0]
        lines += [f"## {title}", "", f"`{commands.get(name, '')}`", "",
                  "| proxy | req/s | p50 ms | p99 ms | errors | CPU µs/req |", "|---|---|---|---|---|---|"]
        for p in proxies:
            rs = results[(name, p)]
            lines.append(f"| {p} | {fmt(med([r['rps'] for r in rs]))} | {fmt(med([r['p50'] for r in rs]), 2)} | "
                         f"{fmt(med([r['p99'] for r in rs]), 2)} | {sum(r['errors'] for r in rs)} | {fmt(med([r['cpu_us'] for r in rs]), 1)} |")
        ratio = lambda key, p: (med([r[key] for r in results[(name, p)]]) or (None,))[0]
        pr, nr = ratio("rps", "portico"), ratio("rps", "nginx")
        if pr and nr:
            lines += ["", f"Portico/nginx throughput: **{pr / nr:.2f}**"]
            p99p, p99n = ratio("p99", "portico"), ratio("p99", "nginx")
            if p99p and p99n:
                lines[-1] += f"; p99 latency Portico/nginx: **{p99p / p99n:.2f}**"
        lines.append("")
    if cost:
        top = sorted(set(cost["portico"]["syscalls"]) | set(cost["nginx"]["syscalls"]),
                     key=lambda c: -max(cost["portico"]["syscalls"].get(c, 0), cost["nginx"]["syscalls"].get(c, 0)))[:4]
        lines += ["## Where a request's CPU goes (HTTP/1.1 keep-alive)", "",
                  f"User-space instructions per proxied request: `valgrind --tool=callgrind` around the proxy, "
                  f"{COST_REQUESTS[0]:,} and {COST_REQUESTS[1]:,} requests (`h2load --h1 -c8`), the difference divided by "
                  f"{COST_REQUESTS[1] - COST_REQUESTS[0]:,} (repeatable: instructions, not time). System calls per request: "
                  "`strace -f -c` on the running proxy over 20,000 requests.", "",
                  "| proxy | instructions/request | syscalls/request | " + " | ".join(top) + " |",
                  "|---|---|---|" + "---|" * len(top)]
        for name in ["portico", "nginx"]:
            sc = cost[name]["syscalls"]
            lines.append(f"| {name} | {cost[name]['instructions']:,.0f} | {sum(sc.values()):.2f} | "
                         + " | ".join(f"{sc.get(c, 0):.2f}" for c in top) + " |")
        ratio = cost["portico"]["instructions"] / cost["nginx"]["instructions"]
        calls = {name: sum(cost[name]["syscalls"].values()) for name in ["portico", "nginx"]}
        kernel = ("Portico makes fewer system calls per request than nginx" if calls["portico"] < calls["nginx"] - 0.05
                  else "the system calls per request are the same for both" if abs(calls["portico"] - calls["nginx"]) <= 0.05
                  else "Portico makes more system calls per request than nginx")
        if ratio < 1:
            user = ("Portico runs fewer user-space instructions per request than nginx; what separates the "
                    "throughputs above is the kernel's share of each request (loopback TCP, twice per request for "
                    "both) and the noise of a machine shared with the load generator and the backends.")
        else:
            user = ("the user-space difference is what remains between the HTTP/1.1 throughputs above: hyper's "
                    "HTTP/1 server (parsing each request into a header map, encoding the response head), the "
                    "header map each upstream response is parsed into for it, and tokio's task wake-ups, against "
                    "nginx's in-place parsing and buffer chains.")
        lines += ["", f"Portico/nginx user-space instructions per request: **{ratio:.2f}**. In the kernel (loopback "
                  f"TCP), {kernel}; {user}", ""]
    lines += ["## Peak RSS over the proxy scenarios", "", "| proxy | MiB |", "|---|---|"]
    lines += [f"| {p} | {rss[p]:.1f} |" for p in proxies]
    lines.append("")
    if l4:
        labels = {"direct": "direct (backend)", "nodeport": "Portico NodePort", "nginx-stream": "nginx `stream {}`",
                  "haproxy-tcp": "HAProxy `mode tcp`"}
        lines += ["## L4: TCP through a NodePort against straight to the backend", "",
                  "`wrk -t1 -c32` against a backend, against Portico's NodePort listener, and, for comparison, against "
                  "nginx `stream {}` (`proxy_pass` to an upstream of both backends) and HAProxy `mode tcp` "
                  "(`balance roundrobin`), all round robin over both backends with one worker, default buffers. "
                  "CPU is the serving processes' (for direct, the backends'; for the proxies, the proxy's alone).", "",
                  "| case | target | req/s | /direct | p99 ms | errors | CPU µs/req |", "|---|---|---|---|---|---|---|"]
        for case, label in [("throughput", "64 KiB responses, keep-alive"), ("connections", "a new connection per request")]:
            direct = med([r["rps"] for r in l4[(case, "direct")]])
            for target in [t for t in labels if (case, t) in l4]:
                rs = l4[(case, target)]
                rps = med([r["rps"] for r in rs])
                ratio = "" if target == "direct" else f"**{rps[0] / direct[0]:.2f}**"
                lines.append(f"| {label} | {labels[target]} | {fmt(rps)} | {ratio} | {fmt(med([r['p99'] for r in rs]), 2)} | "
                             f"{sum(r['errors'] for r in rs)} | {fmt(med([r['cpu_us'] for r in rs]), 1)} |")
        lines.append("")
        others = [med([r["rps"] for r in l4[(c, t)]])[0] / med([r["rps"] for r in l4[(c, "direct")]])[0]
                  for c in ["throughput", "connections"] for t in ["nginx-stream", "haproxy-tcp"] if (c, t) in l4]
        if others:
            lines += [f"What limits these ratios: the load generator, the backends and the proxy share the machine's CPUs, "
                      f"and a proxied byte crosses loopback TCP twice; the other user-space TCP proxies reach "
                      f"{min(others):.2f}-{max(others):.2f} of direct in the same runs. Portico copies request/response "
                      f"traffic through buffers and splices a direction once it streams (1 MiB with the other side silent): "
                      f"see ARCHITECTURE.md, the TCP data path.", ""]
        if ("bulk-up", "direct") in l4:
            lines += ["One TCP connection streaming for the run's length (`iperf3 -c 127.0.0.1 -t S`, upload, and `-R`, "
                      "download), straight to an iperf3 server and through a NodePort whose only endpoint it is.", "",
                      "| direction | direct Gbit/s | NodePort Gbit/s | NodePort/direct | Portico CPU s/GiB |", "|---|---|---|---|---|"]
            for direction in ["up", "down"]:
                d = med([r["gbits"] for r in l4[(f"bulk-{direction}", "direct")]])
                n = med([r["gbits"] for r in l4[(f"bulk-{direction}", "nodeport")]])
                cpu = med([r["cpu_per_gib"] for r in l4[(f"bulk-{direction}", "nodeport")]])
                lines.append(f"| {direction} | {fmt(d, 2)} | {fmt(n, 2)} | **{n[0] / d[0]:.2f}** | {fmt(cpu, 3)} |")
            lines.append("")
    if churned:
        c, s_, w = churned["churn"], churned["steady"], churned["ws"]
        lines += ["## Churn: configuration changing under load", "",
                  f"`{churned['command']}` against Portico, once steady and once while the manifests change "
                  f"{args.churn_rate} times a second (the bench host's paths and the bench Service's endpoints in turn, "
                  "each file written by rename); a WebSocket through Portico echoes a message every second of the churn run.", "",
                  "| run | req/s | p50 ms | p99 ms | failed requests |", "|---|---|---|---|---|",
                  f"| steady | {s_['rps']:,.0f} | {s_['p50']:.2f} | {s_['p99']:.2f} | {s_['errors']} |",
                  f"| churn | {c['rps']:,.0f} | {c['p50']:.2f} | {c['p99']:.2f} | {c['errors']} |", "",
                  f"Changes written: {churned['changes']}; snapshots published: {churned['generations']}; "
                  f"p99 churn/steady: **{c['p99'] / s_['p99']:.2f}**; failed requests under churn: **{c['errors']}**; "
                  f"WebSocket: {w[1]}/{w[0]} messages echoed, "
                  + (f"**closed** ({w[2]})" if w[2] else "**still open** at the end") + ".", ""]
    if prop:
        lines += ["## Configuration propagation", "",
                  f"A new Ingress written to the manifests directory (one file, by rename) until the first request routed by it; "
                  f"{args.changes} changes per size, {CHANGE_SPACING * 1000:.0f} ms apart; Portico's RSS with that many Ingresses loaded.", "",
                  "| Ingresses | median ms | p99 ms | max ms | Portico RSS MiB |", "|---|---|---|---|---|"]
        lines += [f"| {size:,} | {m:.1f} | {p99:.1f} | {mx:.1f} | {r:.1f} |" for size, (m, p99, mx, r) in prop.items()]
        lines.append("")
    if started:
        lines += ["## Start to first routed request", "",
                  "A fresh Portico started on a manifests directory holding that many Ingresses (the propagation "
                  "measurement's, one YAML file) until its first request routed by the last of them: reading and "
                  "parsing the files, the first build, publishing, and the listeners starting to accept (they take "
                  f"no connection before the first snapshot); {args.startup_runs} starts per size.", "",
                  "| Ingresses | median ms | max ms |", "|---|---|---|"]
        lines += [f"| {size:,} | {m:.0f} | {mx:.0f} |" for size, (m, mx) in started.items()]
        lines.append("")
    for title, path in [("Route and service lookups (divan)", "target/bench-lookup.txt"),
                        ("Build time and memory at scale", "target/bench-scale.txt")]:
        f = ROOT / path
        if f.exists():
            text = f.read_text().rstrip()
            lines += [f"## {title}", "", "```", text, "```", ""]
            if "lookup" in path:
                lines += ["Allocations per lookup: divan's allocation profiler adds `alloc` rows to every benchmark "
                          "that allocates; " + ("**none did** (0 allocations per lookup)." if "alloc" not in text.split("\n", 1)[-1]
                                                else "see the `alloc` rows above."), ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
