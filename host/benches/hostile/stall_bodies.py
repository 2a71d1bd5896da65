"""The stalled-bodies probe of probes.sh: N connections each send a 3 MiB body but its
last byte and stop; the server's RSS before, at peak, and after the clients close.
Usage: stall_bodies.py PORT PID plain|tls N"""
import asyncio, ssl, sys, time

PORT = int(sys.argv[1]); PID = int(sys.argv[2]); TLS = sys.argv[3] == "tls"; N = int(sys.argv[4])
BODY = 3 * 1024 * 1024
CONNECTED = [0]

def rss():
    for line in open(f"/proc/{PID}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0

async def client(results, go):
    ctx = None
    if TLS:
        ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    try:
        async with LIMIT:
            r, w = await asyncio.open_connection("127.0.0.1", PORT, ssl=ctx)
    except Exception as e:
        results.append("connect-failed")
        if results.count("connect-failed") == 1: print("connect failed:", repr(e))
        return None
    CONNECTED[0] += 1
    head = f"POST /validate/fast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {BODY}\r\n\r\n"
    try:
        w.write(head.encode()); await w.drain()
        await go.wait()
        w.write(b" " * (BODY - 1))
        await asyncio.wait_for(w.drain(), 15)
        results.append("sent")
    except Exception:
        results.append("refused-or-stalled")
    return w

async def main():
    global LIMIT
    LIMIT = asyncio.Semaphore(20)
    idle = rss(); peak = idle
    results = []
    go = asyncio.Event()
    tasks = [asyncio.create_task(client(results, go)) for _ in range(N)]
    connected = asyncio.get_running_loop().time()
    while sum(1 for t in tasks if t.done()) + CONNECTED[0] < N and asyncio.get_running_loop().time() - connected < 30:
        await asyncio.sleep(0.05)
    print(f"{CONNECTED[0]} connected before the bodies")
    go.set()
    start = time.time()
    while not all(t.done() for t in tasks):
        peak = max(peak, rss()); await asyncio.sleep(0.05)
    for _ in range(20):
        peak = max(peak, rss()); await asyncio.sleep(0.05)
    writers = [t.result() for t in tasks]
    for w in writers:
        if w:
            w.transport.abort()
    await asyncio.sleep(6)
    after = rss()
    print(f"tls={TLS} n={N} idle={idle:.1f}MiB peak={peak:.1f}MiB (+{peak-idle:.1f}) after-close={after:.1f}MiB; "
          f"{results.count('sent')} sent whole, {results.count('refused-or-stalled')} refused/stalled, {results.count('connect-failed')} connect failed")

asyncio.run(main())
