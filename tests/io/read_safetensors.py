#!/usr/bin/env python3
"""Reads a safetensors file with Python's standard library alone (json + struct), checking the
layout the safetensors library requires, and prints one line per tensor and metadata entry:
    tensor <name> <dtype> [d0,d1,...] <value> <value> ...   (values as repr(float): exact)
    meta <key>=<value>
Exits 1 with a message when the file breaks the format."""
import json
import struct
import sys


def main(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    if (8 + n) % 8 != 0:
        sys.exit(f"the data starts at byte {8 + n}, not 8-byte aligned")
    meta = header.pop("__metadata__", {})
    sizes = {"F32": ("f", 4), "F64": ("d", 8)}
    covered = 0
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        code, size = sizes[e["dtype"]]
        begin, end = e["data_offsets"]
        count = 1
        for d in e["shape"]:
            count *= d
        if begin != covered or end - begin != count * size:
            sys.exit(f"tensor {name}: data_offsets {begin, end} do not follow {covered} / its size")
        covered = end
        values = struct.unpack(f"<{count}{code}", data[begin:end])
        shape = json.dumps(e["shape"]).replace(" ", "")
        print("tensor", name, e["dtype"], shape, *(repr(v) for v in values))
    if covered != len(data):
        sys.exit(f"{len(data) - covered} bytes of data belong to no tensor")
    for k in sorted(meta):
        print(f"meta {k}={meta[k]}")


if __name__ == "__main__":
    main(sys.argv[1])
