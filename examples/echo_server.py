#!/usr/bin/python3
"""A tiny TCP echo server for the quick start: answers each line with "<name>: <line>"."""
import socket
import sys
import threading


def serve(conn, name):
    with conn:
        buf = b""
        while True:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                conn.sendall(name + b": " + line + b"\n")


def main():
    port, name = int(sys.argv[1]), sys.argv[2].encode()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=serve, args=(c, name), daemon=True).start()


if __name__ == "__main__":
    main()
