"""Throughput and latency helpers for the NAT-lab benchmark (benches/lab.rs).

    bench.py sink [--host H] [--port P]
        Prints `READY <port>`, then serves each connection by its first byte:
          T  throughput: reads to end of file (4 MiB reads), hashing with SHA-256 as it goes, replies
             with the hex digest and a newline, closes.
          R  request/response: TCP_NODELAY, echoes every byte at once until end of file.
        One line per connection: `DONE T bytes=<n> secs=<s>` / `DONE R` / `ERROR <reason>`.

    bench.py push --host H --port P --bytes N
        Makes a 16 MiB random block, hashes the N-byte payload (the block repeated) before
        connecting, then sends `T` and the payload in 1 MiB slices of a memoryview, half-closes and
        waits for the digest. Prints one JSON line {bytes, secs, mib_s, connect_ms, sha256, ok,
        error}; exit status 2 unless the digests match.

    bench.py rr --host H --port P [--n 2000] [--warmup 50]
        TCP_NODELAY; sends `R`, then n (+ warmup) 1-byte requests, each waiting for its 1-byte reply.
        Prints one JSON line {n, p50_us, p99_us, mean_us, min_us, max_us, connect_ms, error}.

    bench.py many --host H --port P --conns C --bytes N [--timeout S] [--echo]
        C concurrent connections (asyncio), each a `push` of its own N bytes (a different slice of
        the random block per connection, hashed before connecting) checked against the digest the
        sink returns. With --echo the server is a plain echo server instead
        (tests/netlab/py/echo_server.py): each connection sends its N bytes while reading the echo
        back at the same time, half-closes, and checks what came back by SHA-256 (N bytes each
        way). Raises RLIMIT_NOFILE for C sockets. Prints one JSON line {conns, bytes_each, echo,
        ok, failed, secs, max_open, errors}; exit status 2 unless every connection was byte-exact.
"""

import argparse
import asyncio
import hashlib
import json
import os
import resource
import socket
import sys
import threading
import time

BLOCK = 16 << 20
CHUNK = 1 << 20


def log(msg):
    print(msg, flush=True)


def serve_throughput(conn):
    h = hashlib.sha256()
    buf = bytearray(4 << 20)
    mv = memoryview(buf)
    total = 0
    t0 = time.monotonic()
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        h.update(mv[:n])
        total += n
    secs = time.monotonic() - t0
    conn.sendall((h.hexdigest() + "\n").encode())
    conn.shutdown(socket.SHUT_WR)
    log(f"DONE T bytes={total} secs={secs:.3f}")


def serve_rr(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        b = conn.recv(1)
        if not b:
            break
        conn.sendall(b)
    conn.shutdown(socket.SHUT_WR)
    log("DONE R")


def handle(conn):
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"T":
            serve_throughput(conn)
        elif mode == b"R":
            serve_rr(conn)
        elif mode:
            log(f"ERROR unknown mode {mode!r}")
    except OSError as e:
        log(f"ERROR {e}")
    finally:
        conn.close()


def sink(a):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(1024)
    log(f"READY {srv.getsockname()[1]}")
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def connect(a):
    t0 = time.monotonic()
    sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock, (time.monotonic() - t0) * 1000.0


def push(a):
    block = os.urandom(BLOCK)
    mv = memoryview(block)
    expected = hashlib.sha256()
    pos = 0
    while pos < a.bytes:
        n = min(BLOCK, a.bytes - pos)
        expected.update(mv[:n])
        pos += n
    expected = expected.hexdigest()
    out = {"bytes": a.bytes, "secs": None, "mib_s": None, "connect_ms": None, "sha256": expected}
    out.update({"ok": False, "error": None, "cpu_s": None})
    c0 = time.process_time()
    try:
        t0 = time.monotonic()
        sock, out["connect_ms"] = connect(a)
        sock.sendall(b"T")
        pos = 0
        while pos < a.bytes:
            off = pos % BLOCK
            n = min(CHUNK, a.bytes - pos, BLOCK - off)
            sock.sendall(mv[off : off + n])
            pos += n
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            d = sock.recv(256)
            if not d:
                break
            reply += d
        secs = time.monotonic() - t0
        sock.close()
        got = reply.decode(errors="replace").strip()
        out["secs"] = secs
        out["mib_s"] = a.bytes / secs / (1 << 20)
        out["ok"] = got == expected
        if not out["ok"]:
            out["error"] = f"digest mismatch: sink {got!r}, sent {expected}"
    except OSError as e:
        out["error"] = f"after {pos} bytes: {e}"
    # This process's CPU time during the transfer (the digest of the payload came before).
    out["cpu_s"] = round(time.process_time() - c0, 4)
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["ok"] else 2)


def rr(a):
    out = {"n": a.n, "p50_us": None, "p99_us": None, "mean_us": None}
    out.update({"min_us": None, "max_us": None, "connect_ms": None, "error": None})
    try:
        sock, out["connect_ms"] = connect(a)
        sock.sendall(b"R")
        times = []
        clock = time.perf_counter_ns
        for i in range(a.n + a.warmup):
            b = bytes((i % 251,))
            t = clock()
            sock.sendall(b)
            r = sock.recv(1)
            dt = clock() - t
            if r != b:
                raise OSError(f"round trip {i}: sent {b!r}, got {r!r}")
            if i >= a.warmup:
                times.append(dt / 1000.0)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)
        sock.close()
        times.sort()

        def pct(q):
            return times[max(0, -(-len(times) * q // 100) - 1)]

        out.update({"p50_us": pct(50), "p99_us": pct(99), "mean_us": sum(times) / len(times)})
        out.update({"min_us": times[0], "max_us": times[-1]})
    except OSError as e:
        out["error"] = str(e)
    print(json.dumps(out), flush=True)
    sys.exit(0 if out["error"] is None else 2)


def slices(start, n):
    """The pieces of the block, read cyclically from offset `start`, that make an n-byte payload."""
    pos = 0
    while pos < n:
        off = (start + pos) % BLOCK
        k = min(CHUNK, n - pos, BLOCK - off)
        yield off, k
        pos += k


def raise_fd_limit(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        want = need if hard == resource.RLIM_INFINITY else max(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, want))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


async def one_push(a, i, mv, start, expected, state):
    writer = None
    try:
        reader, writer = await asyncio.open_connection(a.host, a.port)
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])
        writer.write(b"T")
        for off, k in slices(start, a.bytes):
            writer.write(mv[off : off + k])
            await writer.drain()
        writer.write_eof()
        got = (await reader.read()).decode(errors="replace").strip()
        if got != expected:
            raise OSError(f"digest mismatch: sink {got!r}, sent {expected}")
        return None
    except (OSError, asyncio.IncompleteReadError) as e:
        return f"connection {i}: {type(e).__name__}: {e}"
    finally:
        if writer is not None:
            state["open"] -= 1
            writer.close()


async def one_echo(a, i, mv, start, expected, state):
    writer = None
    try:
        reader, writer = await asyncio.open_connection(a.host, a.port)
        state["open"] += 1
        state["max_open"] = max(state["max_open"], state["open"])

        async def send():
            for off, k in slices(start, a.bytes):
                writer.write(mv[off : off + k])
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        h = hashlib.sha256()
        got = 0
        while True:
            d = await reader.read(1 << 16)
            if not d:
                break
            h.update(d)
            got += len(d)
        await sender
        if got != a.bytes or h.hexdigest() != expected:
            raise OSError(f"echo mismatch: {got} bytes back of {a.bytes}, sha256 {h.hexdigest()}")
        return None
    except (OSError, asyncio.IncompleteReadError) as e:
        return f"connection {i}: {type(e).__name__}: {e}"
    finally:
        if writer is not None:
            state["open"] -= 1
            writer.close()


async def many_async(a, mv, starts, digests):
    state = {"open": 0, "max_open": 0}
    one = one_echo if a.echo else one_push
    tasks = [
        asyncio.create_task(one(a, i, mv, starts[i], digests[i], state)) for i in range(a.conns)
    ]
    done, pending = await asyncio.wait(tasks, timeout=a.timeout)
    for t in pending:
        t.cancel()
    errors = [t.result() for t in done if t.result() is not None]
    errors += [f"{len(pending)} connections still running after {a.timeout} s"] if pending else []
    return len(done) - sum(1 for t in done if t.result() is not None), errors, state["max_open"]


def many(a):
    raise_fd_limit(a.conns + 64)
    block = os.urandom(BLOCK)
    mv = memoryview(block)
    # Connection i starts at its own offset, so swapped or mixed-up streams fail the digest.
    starts = [(i * 1_048_583) % BLOCK for i in range(a.conns)]
    digests = []
    for start in starts:
        h = hashlib.sha256()
        for off, k in slices(start, a.bytes):
            h.update(mv[off : off + k])
        digests.append(h.hexdigest())
    t0 = time.monotonic()
    ok, errors, max_open = asyncio.run(many_async(a, mv, starts, digests))
    secs = time.monotonic() - t0
    out = {"conns": a.conns, "bytes_each": a.bytes, "echo": a.echo, "ok": ok}
    out["failed"] = a.conns - ok
    out.update({"secs": secs, "max_open": max_open, "errors": errors[:10]})
    print(json.dumps(out), flush=True)
    sys.exit(0 if ok == a.conns else 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["sink", "push", "rr", "many"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bytes", type=int, default=0)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--echo", action="store_true")
    a = p.parse_args()
    {"sink": sink, "push": push, "rr": rr, "many": many}[a.mode](a)


if __name__ == "__main__":
    main()
