#!/usr/bin/env python3
"""Writes a generated schema of N messages for the schema-size benchmarks.

usage: bench/gen_schema.py OUT_DIR N [--per-file K] [--methods-every M]

Every message has five fields (string, int64, bool, a repeated string, a
message field pointing at the previous message); one service per file gets a
Get/Create/List method for every M-th message (default 10; 0: no services).
K messages per file (default 0: all in one file, as in the issue's 5 MB case).
"""
import argparse
import os

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("n", type=int)
p.add_argument("--per-file", type=int, default=0)
p.add_argument("--methods-every", type=int, default=10)
a = p.parse_args()
per_file = a.per_file or a.n
os.makedirs(a.out, exist_ok=True)
for f in range((a.n + per_file - 1) // per_file):
    lo, hi = f * per_file, min(a.n, (f + 1) * per_file)
    out = ['syntax = "proto3";', f"package gen.f{f};", ""]
    for m in range(lo, hi):
        out.append(f"message M{m} {{")
        out.append("  string id = 1;")
        out.append("  int64 count = 2;")
        out.append("  bool active = 3;")
        out.append("  repeated string tags = 4;")
        if m > lo:
            out.append(f"  M{m - 1} previous = 5;")
        out.append("}")
    if a.methods_every:
        out.append(f"service Service{f} {{")
        for m in range(lo, hi, a.methods_every):
            out.append(f"  rpc GetM{m}(M{m}) returns (M{m});")
            out.append(f"  rpc CreateM{m}(M{m}) returns (M{m});")
            out.append(f"  rpc ListM{m}s(M{m}) returns (stream M{m});")
        out.append("}")
    with open(os.path.join(a.out, f"gen{f:05}.proto"), "w") as fh:
        fh.write("\n".join(out) + "\n")
