#!/usr/bin/python3
"""Self-test of echo_loadgen (ctest: bench_loadgen_selftest): it must pass against correct echo
servers and FAIL against broken ones, or its verification would be worth nothing.

Servers here are small Python threads on 127.0.0.1 (port 0): a correct TCP echo, one that
corrupts one byte, one that drops connections, and a minimal RFC 6455 WebSocket echo (checks the
client's masking, answers unmasked frames) to exercise --ws without evnet.
Usage: selftest.py PATH/TO/echo_loadgen
"""

import base64
import hashlib
import socket
import struct
import subprocess
import sys
import threading


def serve(handler):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(128)

    def accept_loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return ls, ls.getsockname()[1]


def echo(c):
    with c:
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)


def corrupt_after(limit):
    state = {"seen": 0}
    lock = threading.Lock()

    def handler(c):
        with c:
            while True:
                d = bytearray(c.recv(65536))
                if not d:
                    return
                with lock:
                    start = state["seen"]
                    state["seen"] += len(d)
                if start <= limit < start + len(d):
                    d[limit - start] ^= 0x01
                c.sendall(d)
    return handler


def drop_after(limit):
    def handler(c):
        got = 0
        with c:
            while got < limit:
                d = c.recv(65536)
                if not d:
                    return
                got += len(d)
                c.sendall(d)
    return handler


def recv_exact(c, n):
    buf = b""
    while len(buf) < n:
        d = c.recv(n - len(buf))
        if not d:
            raise EOFError
        buf += d
    return buf


def ws_handshake(c):
    head = b""
    while b"\r\n\r\n" not in head:
        d = c.recv(4096)
        if not d:
            raise EOFError
        head += d
    key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
           if l.lower().startswith(b"sec-websocket-key:")][0]
    accept = base64.b64encode(hashlib.sha1(
        key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")


def ws_bytes_back(c):
    """Correct handshake, then the client's (masked) frames sent back verbatim."""
    try:
        ws_handshake(c)
    except EOFError:
        return
    echo(c)


def ws_echo(c):
    with c:
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(4096)
            if not d:
                return
            head += d
        key = [l.split(b":", 1)[1].strip() for l in head.split(b"\r\n")
               if l.lower().startswith(b"sec-websocket-key:")][0]
        accept = base64.b64encode(hashlib.sha1(
            key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        try:
            while True:
                b0, b1 = recv_exact(c, 2)
                if not b1 & 0x80:
                    return  # an unmasked client frame violates RFC 6455 5.1: hang up
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", recv_exact(c, 2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", recv_exact(c, 8))[0]
                mask = recv_exact(c, 4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(recv_exact(c, n)))
                hdr = bytes([b0]) + (bytes([n]) if n < 126 else
                                     bytes([126]) + struct.pack("!H", n) if n < 65536 else
                                     bytes([127]) + struct.pack("!Q", n))
                c.sendall(hdr + data)
        except EOFError:
            return


def run(loadgen, port, *args):
    r = subprocess.run([loadgen, "--port", str(port), "--warmup", "0", "--max-time", "60"] +
                       list(args), capture_output=True, text=True, timeout=90)
    return r.returncode, r.stdout + r.stderr


def main():
    loadgen = sys.argv[1]
    failures = []

    def expect(name, rc_want, port, *args, must=None):
        rc, out = run(loadgen, port, *args)
        ok = rc == rc_want and (must is None or must in out)
        print("%-40s rc=%d (want %d) %s" % (name, rc, rc_want, "ok" if ok else "FAIL"))
        if not ok:
            print(out)
            failures.append(name)

    _, p = serve(echo)
    expect("echo ping-pong 64 B", 0, p, "--conns", "8", "--size", "64", "--messages", "2000",
           "--duration", "0", must="mismatches=0")
    expect("echo pipelined 16 × 1000 B", 0, p, "--conns", "4", "--size", "1000", "--depth",
           "16", "--messages", "2000", "--duration", "0")
    expect("echo 100 KiB messages", 0, p, "--conns", "2", "--size", "102400", "--messages",
           "20", "--duration", "0")
    expect("idle mode", 0, p, "--idle", "--conns", "50", "--size", "16", "--duration", "0.2",
           must="READY conns=50")
    rc = subprocess.run([loadgen, "--port", str(p), "--idle-wait-ping", "--conns", "20",
                         "--size", "16", "--duration", "0.2"], input="ping\n",
                        capture_output=True, text=True, timeout=60)
    ok = rc.returncode == 0 and "CONNECTED conns=20" in rc.stdout and "READY conns=20" in rc.stdout
    print("%-40s rc=%d (want 0) %s" % ("idle mode, pings on request", rc.returncode,
                                      "ok" if ok else "FAIL"))
    if not ok:
        print(rc.stdout + rc.stderr)
        failures.append("idle mode, pings on request")
    _, p = serve(corrupt_after(64 * 500 + 17))
    expect("one corrupted byte is caught", 1, p, "--conns", "4", "--size", "64", "--messages",
           "2000", "--duration", "0", must="MISMATCH")
    _, p = serve(drop_after(64 * 10))
    expect("dropped connections are errors", 2, p, "--conns", "4", "--size", "64",
           "--messages", "2000", "--duration", "0")
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    closed_port = ls.getsockname()[1]
    ls.close()
    expect("refused connection is an error", 2, closed_port, "--conns", "1", "--messages", "10",
           "--duration", "0")
    _, p = serve(ws_echo)
    expect("websocket 64 B", 0, p, "--ws", "--conns", "4", "--size", "64", "--messages", "500",
           "--duration", "0", must="mode=ws")
    expect("websocket 4 KiB pipelined", 0, p, "--ws", "--conns", "2", "--size", "4096",
           "--depth", "4", "--messages", "200", "--duration", "0")
    expect("websocket 70,000 B (64-bit length)", 0, p, "--ws", "--conns", "1", "--size",
           "70000", "--messages", "10", "--duration", "0")
    _, p = serve(ws_bytes_back)
    expect("masked server frames are rejected", 2, p, "--ws", "--conns", "1", "--messages", "5",
           "--duration", "0", "--connect-timeout", "2", must="masked")
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
