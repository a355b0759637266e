"""Packet capture for the netlab tests (no tcpdump needed).

Reads every frame on every interface of the network namespace it runs in (AF_PACKET, ETH_P_ALL),
counts frames and bytes, and counts how many frames contain each marker. Prints `CAPTURE READY`
once the socket is open; when the file given by --stop-file appears it prints one JSON line

    {"frames": n, "bytes": n, "drops": n, "hits": {"<name>": n, ...}}

and exits. Markers are given as --marker NAME=HEX (repeatable).
"""

import argparse
import json
import os
import socket
import struct
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
SO_RCVBUFFORCE = 33


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stop-file", required=True)
    p.add_argument("--marker", action="append", default=[])
    p.add_argument("--max-secs", type=float, default=1800.0)
    a = p.parse_args()
    markers = {}
    for m in a.marker:
        name, _, hexval = m.partition("=")
        markers[name] = bytes.fromhex(hexval)

    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 20)
    sock.settimeout(0.2)
    print("CAPTURE READY", flush=True)

    buf = bytearray(1 << 18)
    frames = 0
    total = 0
    drops = 0
    hits = {name: 0 for name in markers}
    start = time.monotonic()
    next_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            next_check = now + 0.2
            if os.path.exists(a.stop_file) or now - start > a.max_secs:
                break
        try:
            n = sock.recv_into(buf)
        except socket.timeout:
            continue
        frames += 1
        total += n
        for name, m in markers.items():
            if buf.find(m, 0, n) >= 0:
                hits[name] += 1
    try:
        stats = sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        drops = struct.unpack("II", stats)[1]
    except OSError:
        drops = -1
    print(json.dumps({"frames": frames, "bytes": total, "drops": drops, "hits": hits}), flush=True)


if __name__ == "__main__":
    main()
