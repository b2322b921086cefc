#!/usr/bin/env python3
"""Robustness figures of a running protoserve (release build), over loopback only.

usage (with the test venv: .venv/bin/python, grpcio):
  bench/robustness.py health    Health/Check latency while 4 concurrent ~10 MB
                                non-flat requests (5M empty repeated messages
                                each) are decoded; also their time and peak RSS.
  bench/robustness.py streams   server RSS with 500 ListUsers streams over
                                300k records that the client never reads, and
                                GetUser latency meanwhile.

Each mode starts its own server (`serve ... --addr 127.0.0.1:0 --no-watch`),
reads its port from the log and stops it at the end. Knobs (env):
PROTOSERVE_BIN (target/release/protoserve), ROUNDS (health: 3 waves of 4),
STREAMS (500), RECORDS (300000), GETS (50).
"""
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PROTOSERVE_BIN", os.path.join(ROOT, "target", "release", "protoserve"))
# Every channel its own connection (grpcio shares subchannels by default, and
# then unread streams would fill the connection window that other calls need).
OPTS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.use_local_subchannel_pool", 1),
]


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, payload):
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class Server:
    def __init__(self, args):
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, RUST_LOG="protoserve=info")
        self.proc = subprocess.Popen(
            [BIN, "serve", *args, "--addr", "127.0.0.1:0", "--no-watch"],
            stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        deadline = time.time() + 300
        while time.time() < deadline:
            self.log.seek(0)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                self.log.seek(0)
                sys.exit("server exited:\n" + self.log.read())
            time.sleep(0.05)
        sys.exit("server did not start listening")

    def rss_mb(self, key="VmRSS"):
        return status_kb(self.proc.pid, key) / 1024

    def channel(self):
        return grpc.insecure_channel(f"127.0.0.1:{self.port}", options=OPTS)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def unary(channel, path):
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def probe_health(port, stop, results):
    """Health/Check every 10 ms until `stop`; sends the latencies (ms) back."""
    ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTS)
    check = unary(ch, "/grpc.health.v1.Health/Check")
    check(b"", timeout=30)
    results.put("ready")
    lat = []
    while not stop.is_set():
        t = time.perf_counter()
        check(b"", timeout=30)
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    results.put(lat)


def health():
    rounds = int(os.environ.get("ROUNDS", "3"))
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "batch.proto"), "w") as f:
            f.write('syntax = "proto3";\npackage bench;\n'
                    "message Item { int32 n = 1; }\n"
                    "message Batch { string id = 1; repeated Item items = 2; }\n"
                    "service BatchService { rpc CreateBatch(Batch) returns (Batch); }\n")
        server = Server([d])
        try:
            # 5,000,000 empty Items: 10,000,000 bytes, under the 10 MiB default limit.
            item = field_bytes(2, b"")
            body = item * 5_000_000
            check = unary(server.channel(), "/grpc.health.v1.Health/Check")
            idle = []
            for _ in range(200):
                t = time.perf_counter()
                check(b"", timeout=10)
                idle.append((time.perf_counter() - t) * 1000)
            # The prober is a process of its own, so the senders' Python threads
            # (GIL, 10 MB copies) do not delay it: what it measures is the server.
            ctx = multiprocessing.get_context("spawn")
            stop, results = ctx.Event(), ctx.Queue()
            prober = ctx.Process(target=probe_health, args=(server.port, stop, results))
            prober.start()
            results.get(timeout=60)  # the prober is up and has answered once
            durations, errors = [], []
            for wave in range(rounds):

                def send(i):
                    ch = server.channel()
                    t = time.perf_counter()
                    try:
                        unary(ch, "/bench.BatchService/CreateBatch")(field_bytes(1, b"b%d" % i) + body, timeout=300)
                    except grpc.RpcError as e:
                        errors.append(e.code().name)
                    durations.append(time.perf_counter() - t)
                    ch.close()

                senders = [threading.Thread(target=send, args=(wave * 4 + i,)) for i in range(4)]
                for s in senders:
                    s.start()
                for s in senders:
                    s.join()
            stop.set()
            busy = results.get(timeout=60)
            prober.join()
            print(f"date: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}  machine: {os.cpu_count()} cores  binary: {BIN}")
            print(f"request: {len(body) / 1e6:.1f} MB (5,000,000 empty repeated messages), 4 concurrent, {rounds} waves")
            print(f"Health/Check idle:        p50 {statistics.median(idle):7.2f} ms  p99 {percentile(idle, 99):7.2f} ms  max {max(idle):7.2f} ms")
            print(f"Health/Check while busy:  p50 {statistics.median(busy):7.2f} ms  p99 {percentile(busy, 99):7.2f} ms  max {max(busy):7.2f} ms  ({len(busy)} calls)")
            print(f"CreateBatch:              median {statistics.median(durations):.2f} s  max {max(durations):.2f} s  errors {errors or 'none'}")
            print(f"server RSS: peak {server.rss_mb('VmHWM'):.0f} MB, now {server.rss_mb():.0f} MB")
        finally:
            server.stop()


def streams():
    n_streams = int(os.environ.get("STREAMS", "500"))
    records = int(os.environ.get("RECORDS", "300000"))
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, "users.yaml")
        with open(data, "w") as f:
            f.write("users.User:\n")
            for i in range(records):
                f.write(f"  - {{id: u{i}, name: User {i}, email: u{i}@example.com, age: {i % 90}}}\n")
        server = Server([os.path.join(ROOT, "schemas", "users"), "--data", data])
        try:
            get = unary(server.channel(), "/users.UserService/GetUser")
            req = field_bytes(1, b"u12345")
            get(req, timeout=10)
            before = server.rss_mb()
            channels = [server.channel() for _ in range((n_streams + 49) // 50)]
            calls = []
            list_req = field_varint(1, records)
            for i in range(n_streams):
                ch = channels[i // 50]
                call = ch.unary_stream("/users.UserService/ListUsers", request_serializer=None,
                                       response_deserializer=None)(list_req, timeout=600)
                calls.append(call)
            # Settle: until the server's RSS stops growing for a second (at most 30 s).
            last, stable_since, start = -1.0, time.time(), time.time()
            while time.time() - start < 30 and time.time() - stable_since < 1.0:
                now = server.rss_mb()
                if now > last + 1:
                    last, stable_since = now, time.time()
                time.sleep(0.1)
            during = server.rss_mb()
            lat, failed = [], []
            for i in range(int(os.environ.get("GETS", "50"))):
                t = time.perf_counter()
                try:
                    get(field_bytes(1, b"u%d" % (i * 997 % records)), timeout=10)
                except grpc.RpcError as e:
                    failed.append(e.code().name)
                lat.append((time.perf_counter() - t) * 1000)
            print(f"date: {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}  machine: {os.cpu_count()} cores  binary: {BIN}")
            print(f"{records} records pre-loaded; {n_streams} ListUsers(page_size={records}) streams opened, never read")
            print(f"server RSS: before {before:.0f} MB, with the streams open {during:.0f} MB (peak {server.rss_mb('VmHWM'):.0f} MB)")
            print(f"GetUser meanwhile ({len(lat)} calls, 10 s deadline): p50 {statistics.median(lat):.2f} ms  "
                  f"max {max(lat):.2f} ms  failed {len(failed)} {sorted(set(failed))}")
            for c in calls:
                c.cancel()
        finally:
            server.stop()


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "health":
        health()
    elif mode == "streams":
        streams()
    else:
        sys.exit(__doc__)
