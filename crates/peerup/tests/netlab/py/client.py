"""Echo client for the netlab tests.

Connects to HOST:PORT, sends BYTES random bytes (os.urandom) from a sender thread while the main
thread reads everything echoed back, half-closes after the last byte, and prints one JSON line:

    {"sent_sha256", "recv_sha256", "bytes", "recv_bytes", "secs", "connect_ms", "ttfb_ms", "error"}

With --marker HEX, the marker is written over the random data at every multiple of --every bytes,
so a capture can look for plaintext. Exit status 0 when no error happened, 2 otherwise (the JSON
line is printed either way).
"""

import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    p.add_argument("--chunk", type=int, default=1 << 20)
    p.add_argument("--marker", default="")
    p.add_argument("--every", type=int, default=4096)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    marker = bytes.fromhex(a.marker)

    result = {
        "sent_sha256": None,
        "recv_sha256": None,
        "bytes": 0,
        "recv_bytes": 0,
        "secs": None,
        "connect_ms": None,
        "ttfb_ms": None,
        "error": None,
    }
    errors = []
    t0 = time.monotonic()
    try:
        sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
    except OSError as e:
        result["error"] = f"connect: {e}"
        print(json.dumps(result), flush=True)
        sys.exit(2)
    result["connect_ms"] = (time.monotonic() - t0) * 1000.0
    sock.settimeout(a.timeout)
    sent_hash = hashlib.sha256()

    def sender():
        pos = 0
        try:
            while pos < a.bytes:
                n = min(a.chunk, a.bytes - pos)
                block = bytearray(os.urandom(n))
                if marker:
                    first = (-pos) % a.every
                    for off in range(first, n - len(marker) + 1, a.every):
                        block[off : off + len(marker)] = marker
                sent_hash.update(block)
                sock.sendall(block)
                pos += n
                result["bytes"] = pos
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(f"send after {pos} bytes: {e}")

    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    recv_hash = hashlib.sha256()
    received = 0
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            if received == 0:
                result["ttfb_ms"] = (time.monotonic() - t0) * 1000.0
            recv_hash.update(data)
            received += len(data)
    except OSError as e:
        errors.append(f"recv after {received} bytes: {e}")
    thread.join(a.timeout)
    if thread.is_alive():
        errors.append("sender still blocked")
    sock.close()

    result["secs"] = time.monotonic() - t0
    result["recv_bytes"] = received
    result["sent_sha256"] = sent_hash.hexdigest()
    result["recv_sha256"] = recv_hash.hexdigest()
    if errors:
        result["error"] = "; ".join(errors)
    print(json.dumps(result), flush=True)
    sys.exit(2 if errors else 0)


if __name__ == "__main__":
    main()
