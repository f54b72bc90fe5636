#!/usr/bin/python3
"""Drives ws_echo_server with Python's `websockets` client (Debian's python3-websockets).

Usage: ws_python_client.py PORT SCENARIO
Prints "OK <scenario>" and exits 0 when the scenario passed; raises (exit 1) otherwise.
Exit 77 means the websockets module is missing (the caller skips).
"""
import asyncio
import random
import sys

try:
    import websockets
    from websockets.exceptions import ConnectionClosed
except ImportError:
    sys.exit(77)

PORT = int(sys.argv[1])
SCENARIO = sys.argv[2]
URL = f"ws://127.0.0.1:{PORT}/"


def check(cond, what):
    if not cond:
        raise AssertionError(what)


async def echo(ws, msg):
    await ws.send(msg)
    got = await asyncio.wait_for(ws.recv(), 10)
    check(type(got) is type(msg) if not isinstance(msg, list) else True, f"opcode changed: {type(got)}")
    return got


async def text():
    async with websockets.connect(URL, compression=None) as ws:
        for m in ["hello", "", "κόσμε 😀", "x" * 70000]:
            got = await echo(ws, m)
            check(got == m, f"text echo differs for {m[:20]!r}")


async def binary():
    async with websockets.connect(URL, compression=None) as ws:
        for m in [bytes(range(256)), b"", b"\xff" * 125, b"\x00" * 126, bytes(65536)]:
            got = await echo(ws, m)
            check(isinstance(got, bytes) and got == m, "binary echo differs")


async def fragmented():
    async with websockets.connect(URL, compression=None) as ws:
        await ws.send(["frag", "mented ", "text"])
        got = await asyncio.wait_for(ws.recv(), 10)
        check(got == "fragmented text", f"got {got!r}")
        await ws.send([b"\x01\x02", b"", b"\x03"])
        got = await asyncio.wait_for(ws.recv(), 10)
        check(got == b"\x01\x02\x03", f"got {got!r}")


async def ping():
    async with websockets.connect(URL, compression=None) as ws:
        for payload in [b"", b"ping-data", b"p" * 125]:
            waiter = await ws.ping(payload)
            await asyncio.wait_for(waiter, 10)
        got = await echo(ws, "after ping")
        check(got == "after ping", "echo after ping")


async def close():
    ws = await websockets.connect(URL, compression=None)
    await echo(ws, "x")
    await ws.close(code=4000, reason="bye now")
    check(ws.close_code == 4000, f"close code {ws.close_code}")
    check(ws.close_reason == "bye now", f"close reason {ws.close_reason!r}")


async def compression():
    async with websockets.connect(URL) as ws:  # offers permessage-deflate by default
        exts = [e.name for e in ws.extensions]
        check("permessage-deflate" in exts, f"deflate not negotiated: {exts}")
        for m in ["short", "compress me " * 10000, bytes(range(256)) * 100]:
            got = await echo(ws, m)
            check(got == m, "compressed echo differs")
    # An offer of an 8-bit server window (and no context takeover): the server used to decline
    # it (zlib has no 8-bit raw window); now it accepts, and Python's inflater, held to 256 bytes
    # (zlib wbits=-8), must take what it compresses.
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    offer = ClientPerMessageDeflateFactory(server_max_window_bits=8, server_no_context_takeover=True)
    async with websockets.connect(URL, extensions=[offer], compression=None) as ws:
        check(len(ws.extensions) == 1, f"8-bit window offer declined: {ws.extensions}")
        params = ws.extensions[0]
        check(params.remote_max_window_bits == 8, f"server window {params.remote_max_window_bits}")
        check(params.remote_no_context_takeover, "server_no_context_takeover not accepted")
        rng = random.Random(5)
        block = bytes(rng.randrange(256) for _ in range(600))
        for m in ["compress me " * 10000, block * 200, bytes(range(256)) * 100]:
            got = await echo(ws, m)
            check(got == m, "compressed echo (8-bit window) differs")
    async with websockets.connect(URL, compression=None) as ws:
        check(not ws.extensions, "extension without an offer")
        check(await echo(ws, "plain") == "plain", "plain echo")


async def large():
    async with websockets.connect(URL, compression=None, max_size=None) as ws:
        m = bytes(i & 0xFF for i in range(8 << 20))
        got = await echo(ws, m)
        check(got == m, "8 MiB echo differs")


async def too_big():
    ws = await websockets.connect(URL, compression=None, max_size=None)
    try:
        await ws.send(b"z" * ((16 << 20) + 1))
        await asyncio.wait_for(ws.recv(), 10)
        raise AssertionError("oversized message was echoed")
    except ConnectionClosed:
        pass
    check(ws.close_code == 1009, f"close code {ws.close_code}")


async def going_away():
    # The test stops the server once this prints CONNECTED: the server must say 1001 and the
    # close handshake must complete both ways (websockets raises ConnectionClosedOK only when
    # a close frame was received and its own reply was sent, both with 1000 or 1001).
    ws = await websockets.connect(URL, compression=None)
    await echo(ws, "x")
    print("CONNECTED", flush=True)
    try:
        await asyncio.wait_for(ws.recv(), 30)
        check(False, "the server sent a message instead of closing")
    except websockets.exceptions.ConnectionClosedOK:
        pass
    check(ws.close_code == 1001, f"close code {ws.close_code}")
    check(ws.close_reason == "going away", f"close reason {ws.close_reason!r}")


SCENARIOS = {f.__name__: f for f in [text, binary, fragmented, ping, close, compression, large,
                                     too_big, going_away]}

if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(SCENARIOS[SCENARIO](), 60))
    print("OK", SCENARIO)
