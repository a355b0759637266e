"""TCP echo server for the netlab tests.

Echoes every byte back and half-closes once the client has half-closed. Prints one line per event,
flushed at once, so the Rust side can wait on them:

    READY <port>
    CONN <n> OPEN <peer ip>:<peer port>
    CONN <n> CLOSED bytes=<echoed>
    CONN <n> ERROR <reason>
"""

import argparse
import socket
import threading


def log(msg):
    print(msg, flush=True)


def handle(conn, n):
    total = 0
    try:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            conn.sendall(data)
            total += len(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError as e:
        log(f"CONN {n} ERROR {e}")
    finally:
        conn.close()
        log(f"CONN {n} CLOSED bytes={total}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(1024)
    log(f"READY {srv.getsockname()[1]}")
    n = 0
    while True:
        conn, peer = srv.accept()
        n += 1
        log(f"CONN {n} OPEN {peer[0]}:{peer[1]}")
        threading.Thread(target=handle, args=(conn, n), daemon=True).start()


if __name__ == "__main__":
    main()
