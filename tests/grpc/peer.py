"""A real gRPC stack (grpcio) on both sides of Portico, for tests/grpc_real.rs.

    python3 peer.py server            prints the port it listens on (127.0.0.1), then serves
    python3 peer.py client ADDR       runs every scenario through ADDR (Portico), prints ok
    python3 peer.py client ADDR CA    the same over TLS (Portico's HTTPS listener), CA a PEM file
    python3 peer.py long ADDR         one bidirectional call kept open; stdin drives it:
                                      "send X" sends X and prints "echo X" when it comes
                                      back, "end" half-closes and prints "ok" if the call
                                      ends with OK

Methods are raw bytes in and out (no codegen): /test.Echo/Unary, ServerStream, ClientStream,
Bidi, Slow (waits until cancelled) and WasCancelled (whether Slow saw its cancellation).
The server also answers the gRPC health protocol (/grpc.health.v1.Health/Check, hand-encoded
messages): the whole server ("") is SERVING, "shop.Cart" is what the file named by
$PEER_HEALTH_FILE says (SERVING or NOT_SERVING), any other service NOT_FOUND."""
import os
import sys
import threading
import time
from concurrent import futures

import grpc

MAX = 16 * 1024 * 1024
OPTIONS = [("grpc.max_send_message_length", MAX), ("grpc.max_receive_message_length", MAX)]
CANCELLED = threading.Event()


def unary(request, context):
    if request == b"fail":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    context.set_trailing_metadata((("x-trace", "abc"), ("x-blob-bin", b"\x00\x01\x02")))
    return request


def server_stream(request, context):
    for i in range(int(request)):
        yield b"m%d" % i


def client_stream(requests, context):
    return str(sum(1 for _ in requests)).encode()


def bidi(requests, context):
    for r in requests:
        yield r


def slow(request, context):
    context.add_callback(CANCELLED.set)
    deadline = time.time() + 20
    while context.is_active() and time.time() < deadline:
        time.sleep(0.02)
    return b"late"


def was_cancelled(request, context):
    return b"yes" if CANCELLED.wait(5) else b"no"


def health_check(request, context):
    # HealthCheckRequest { string service = 1; }: names here are short (one length byte).
    name = request[2:2 + request[1]].decode() if request[:1] == b"\x0a" else ""
    if name == "":
        status = 1
    elif name == "shop.Cart":
        path = os.environ.get("PEER_HEALTH_FILE", "")
        said = open(path).read().strip() if path and os.path.exists(path) else "SERVING"
        status = 1 if said == "SERVING" else 2
    else:
        context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
    # HealthCheckResponse { ServingStatus status = 1; }
    return bytes([0x08, status])


def serve():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), options=OPTIONS)
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "WasCancelled": grpc.unary_unary_rpc_method_handler(was_cancelled),
    }
    health = {"Check": grpc.unary_unary_rpc_method_handler(health_check)}
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler("test.Echo", handlers),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # Bounded: the test kills it long before.
    server.wait_for_termination(timeout=600)


def check(what, got, want):
    if got != want:
        raise SystemExit(f"{what}: got {got!r}, want {want!r}")


def client(addr, ca=None):
    def channel(authority):
        options = OPTIONS + [("grpc.default_authority", authority)]
        if ca is None:
            return grpc.insecure_channel(addr, options=options)
        # TLS with SNI and :authority the route's host, verified against the test's CA.
        credentials = grpc.ssl_channel_credentials(root_certificates=open(ca, "rb").read())
        options.append(("grpc.ssl_target_name_override", authority))
        return grpc.secure_channel(addr, credentials, options=options)

    ch = channel("g.example")
    t = 30
    unary_call = ch.unary_unary("/test.Echo/Unary")
    response, call = unary_call.with_call(b"hello", timeout=t)
    check("unary", response, b"hello")
    trailers = dict(call.trailing_metadata())
    check("trailer x-trace", trailers.get("x-trace"), "abc")
    check("trailer x-blob-bin", trailers.get("x-blob-bin"), b"\x00\x01\x02")
    try:
        unary_call(b"fail", timeout=t)
        raise SystemExit("abort: no error")
    except grpc.RpcError as e:
        check("abort code", e.code(), grpc.StatusCode.NOT_FOUND)
        check("abort details", e.details(), "no such thing")
    got = list(ch.unary_stream("/test.Echo/ServerStream")(b"100", timeout=t))
    check("server streaming", got, [b"m%d" % i for i in range(100)])
    got = ch.stream_unary("/test.Echo/ClientStream")(iter([b"x"] * 100), timeout=t)
    check("client streaming", got, b"100")
    sent = [b"b%d" % i for i in range(50)]
    got = list(ch.stream_stream("/test.Echo/Bidi")(iter(sent), timeout=t))
    check("bidi", got, sent)
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    check("4 MiB", unary_call(big, timeout=t), big)
    calls = [unary_call.future(b"c%d" % i, timeout=t) for i in range(1000)]
    check("1000 concurrent", [c.result() for c in calls], [b"c%d" % i for i in range(1000)])
    # A client's cancellation reaches the endpoint (RST_STREAM through Portico).
    slow_call = ch.unary_unary("/test.Echo/Slow").future(b"", timeout=t)
    time.sleep(0.5)
    slow_call.cancel()
    check("cancellation seen", ch.unary_unary("/test.Echo/WasCancelled")(b"", timeout=t), b"yes")
    # A deadline: grpc-timeout goes to the endpoint; the client gets DEADLINE_EXCEEDED.
    try:
        ch.unary_unary("/test.Echo/Slow")(b"", timeout=0.5)
        raise SystemExit("deadline: no error")
    except grpc.RpcError as e:
        check("deadline", e.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
    # Over the route's proxy-body-size (ingress-nginx's default 1m): RESOURCE_EXHAUSTED
    # (Portico's 413), not the endpoint's fault.
    try:
        channel("small.example").unary_unary("/test.Echo/Unary")(big, timeout=t)
        raise SystemExit("too large: no error")
    except grpc.RpcError as e:
        check("too large", e.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
    # No ready endpoint: UNAVAILABLE, from Portico.
    try:
        channel("none.example").unary_unary("/test.Echo/Unary")(b"x", timeout=t)
        raise SystemExit("unavailable: no error")
    except grpc.RpcError as e:
        check("no endpoint", e.code(), grpc.StatusCode.UNAVAILABLE)
    print("ok", flush=True)


def long_call(addr):
    import queue
    ch = grpc.insecure_channel(addr, options=OPTIONS + [("grpc.default_authority", "g.example")])
    outgoing = queue.Queue()

    def requests():
        while True:
            item = outgoing.get()
            if item is None:
                return
            yield item

    responses = ch.stream_stream("/test.Echo/Bidi")(requests(), timeout=120)
    for line in sys.stdin:
        command = line.strip()
        if command.startswith("send "):
            outgoing.put(command[5:].encode())
            print("echo " + next(responses).decode(), flush=True)
        elif command == "end":
            outgoing.put(None)
            rest = list(responses)
            check("nothing after the last echo", rest, [])
            check("status", responses.code(), grpc.StatusCode.OK)
            print("ok", flush=True)
            return


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve()
    elif sys.argv[1] == "long":
        long_call(sys.argv[2])
    else:
        client(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
