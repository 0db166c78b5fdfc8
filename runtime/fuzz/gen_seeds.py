#!/usr/bin/env python3
"""Writes the seed corpora under runtime/fuzz/seeds/<target>/: a few valid inputs per target and
mode so that short runs reach the deep code at once. Deterministic; run it again after changing
a harness's input layout (the first byte of every input picks the harness's mode, see each
target's doc comment).

    pip install xxhash==3.5.0   # the log's frame check (xxh3-64, seeded)
    python3 runtime/fuzz/gen_seeds.py
"""

import gzip
import hashlib
import pathlib
import struct
import zlib

import xxhash

ROOT = pathlib.Path(__file__).resolve().parent / "seeds"
NOW = 1_700_000_000_000_000_000
SEC = 1_000_000_000


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(bytes(data))


def noise(label, n):
    """Deterministic bytes for the modes that derive content from arbitrary bytes."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{label}/{i}".encode()).digest()
        i += 1
    return out[:n]


# --- compression -------------------------------------------------------------------------

def snappy(data):
    """Raw (block) snappy with literals only: valid, if not small."""
    out = bytearray(varint(len(data)))
    i = 0
    while i < len(data):
        chunk = data[i:i + 65536]
        n = len(chunk)
        if n <= 60:
            out.append((n - 1) << 2)
        elif n <= 256:
            out += bytes([60 << 2, n - 1])
        else:
            out += bytes([61 << 2]) + struct.pack("<H", n - 1)
        out += chunk
        i += n
    return bytes(out)


def gz(data):
    return gzip.compress(data, mtime=0)


def raw_deflate(data):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def zl(data):
    return zlib.compress(data)


# --- protobuf ------------------------------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(tag, v):
    return varint(tag << 3) + varint(v) if v else b""


def field_bytes(tag, b, always=False):
    if isinstance(b, str):
        b = b.encode()
    if not b and not always:
        return b""
    return varint(tag << 3 | 2) + varint(len(b)) + b


def timestamp(ns):
    seconds, nanos = ns // SEC, ns % SEC
    return field_varint(1, seconds) + field_varint(2, nanos)


def entry_pb(ns, line, metadata=()):
    out = b""
    if ns is not None:
        out += field_bytes(1, timestamp(ns), always=True)
    out += field_bytes(2, line)
    for name, value in metadata:
        out += field_bytes(3, field_bytes(1, name) + field_bytes(2, value), always=True)
    return out


def push_pb(streams):
    out = b""
    for labels, entries in streams:
        body = field_bytes(1, labels)
        for e in entries:
            body += field_bytes(2, entry_pb(*e), always=True)
        out += field_bytes(1, body, always=True)
    return out


PB_PUSHES = {
    "hello": [('{app="api"}', [(NOW, "hello")])],
    "two-streams-metadata": [
        ('{app="api", env="prod"}', [(NOW, "one", [("trace_id", "abc")]), (NOW + 1, "two")]),
        ('{app="db"}', [(NOW - 5 * SEC, "three ünïcode")]),
    ],
    "label-syntax": [
        ("up{a='x\\'y', b=`raw`, \"quoted.name\"=\"v\",}", [(NOW, "syntax")]),
        ('{a="\\u00e9\\x41\\101\\n", service_name="svc"}', [(NOW, "escapes")]),
    ],
    "rejections": [
        ('{app="api"', [(NOW, "unparsed")]),
        ('{}', [(NOW, "no labels")]),
        ('{a="1", a="2"}', [(NOW, "dup")]),
        ('{app="old"}', [(NOW - 8 * 24 * 3600 * SEC, "too old"), (None, "no timestamp")]),
        ('{app="future"}', [(NOW + 3600 * SEC, "too new")]),
        ('{app="long"}', [(NOW, "x" * 40, [("k" * 10, "v" * 20)])]),
        ('{app="trunc"}', [(NOW, "ünïcödé " * 4), (NOW - 1800 * SEC, "y" * 20)]),
    ],
}


def push_protobuf():
    t = "push_protobuf"
    for name, streams in PB_PUSHES.items():
        pb = push_pb(streams)
        write(t, f"raw-{name}", b"\x00" + snappy(pb))
        write(t, f"proto-{name}", b"\x01" + pb)
        write(t, f"proto-tight-truncate-{name}", b"\x81" + pb)
        write(t, f"proto-tight-{name}", bytes([0xA1]) + pb)
    pb = push_pb(PB_PUSHES["two-streams-metadata"])
    write(t, "raw-ct-snappy-ce", bytes([0x14]) + snappy(pb))
    write(t, "raw-gzip", bytes([0x08]) + gz(snappy(pb)))
    write(t, "raw-deflate", bytes([0x0C]) + raw_deflate(snappy(pb)))
    write(t, "raw-zlib", bytes([0x1C]) + zl(snappy(pb)))
    write(t, "wrap-gzip", bytes([0x02]) + pb)
    write(t, "wrap-deflate", bytes([0x06]) + pb)
    write(t, "wrap-zlib-off", bytes([0xEA]) + pb)
    write(t, "edge-timestamps-off", bytes([0xE1]) + push_pb([('{a="1"}', [(-(2**63), "min"), (2**63 - 1, "max")])]))
    for i, mode in enumerate([0x03, 0x83, 0xE3, 0x07]):
        write(t, f"built-{i}", bytes([mode]) + noise(f"pb{i}", 200))


# --- JSON ----------------------------------------------------------------------------------

JSON_PUSHES = {
    "hello": '{"streams":[{"stream":{"app":"api"},"values":[["1700000000000000000","hello"]]}]}',
    "metadata": (
        '{"streams":[{"stream":{"app":"api","env":"prod"},"values":[["1700000000000000000","one",'
        '{"trace_id":"abc"}],["1700000000000000001","two"]]},{"stream":{"app":"db"},"values":'
        '[["1699999995000000000","three \\u00fcn\\u00efcode"]]}]}'
    ),
    "rejections": (
        '{"streams":[{"stream":{"a.b":"x"},"values":[["1700000000000000000","bad name"]]},'
        '{"stream":{"a":""},"values":[["1700000000000000000","no labels"]]},'
        '{"stream":{"app":"old"},"values":[["1699000000000000000","too old"],["-5","negative"]]},'
        '{"stream":{"app":"x"},"values":[["1700000000000000000","xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",'
        '{"k":"vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv","k2":"v","k3":"v"}]]}],"extra":{"ignored":[1,2]}}'
    ),
    "malformed": '{"streams":[{"stream":{"app":1},"values":[["x","y"]]}]}',
}


def push_json():
    t = "push_json"
    for name, body in JSON_PUSHES.items():
        b = body.encode()
        write(t, f"raw-{name}", b"\x00" + b)
        write(t, f"raw-tight-{name}", bytes([0x90]) + b)
        write(t, f"gzip-{name}", b"\x01" + b)
    b = JSON_PUSHES["metadata"].encode()
    write(t, "raw-ce-gzip", bytes([0x08]) + gz(b))
    write(t, "raw-ce-deflate", bytes([0x0C]) + raw_deflate(b))
    write(t, "raw-ce-zlib-truncate", bytes([0x8C]) + zl(b))
    write(t, "deflate", bytes([0x02]) + b)
    write(t, "zlib-off", bytes([0xE6]) + b)
    for i, mode in enumerate([0x03, 0x07, 0xA3, 0xEF]):
        write(t, f"built-{i}", bytes([mode]) + noise(f"json{i}", 200))


# --- plugin batch format -------------------------------------------------------------------

class Arena:
    def __init__(self):
        self.bytes = bytearray()

    def span(self, s):
        b = s.encode()
        out = struct.pack("<II", len(self.bytes), len(b))
        self.bytes += b
        return out


def request(tenant, streams):
    """Written as RequestWriter does: per stream its label pairs, per entry its metadata pairs
    then its line; the tenant last."""
    arena = Arena()
    pairs = bytearray()
    entries = bytearray()
    recs = []
    pair_count = entry_count = 0
    for labels, ents in streams:
        start = pair_count
        for n, v in labels:
            pairs += arena.span(n) + arena.span(v)
            pair_count += 1
        recs.append((start, pair_count - start, entry_count))
        for ts, line, md in ents:
            mstart = pair_count
            for n, v in md:
                pairs += arena.span(n) + arena.span(v)
                pair_count += 1
            entries += struct.pack("<q", ts) + arena.span(line) + struct.pack("<II", mstart, pair_count - mstart)
            entry_count += 1
    tenant_off = len(arena.bytes)
    arena.bytes += tenant.encode()
    out = bytearray(b"SLCB" + struct.pack("<HH", 1, 0))
    out += struct.pack("<II", tenant_off, len(tenant.encode()))
    out += struct.pack("<IIII", len(recs), entry_count, pair_count, len(arena.bytes))
    for i, (ls, ll, es) in enumerate(recs):
        end = recs[i + 1][2] if i + 1 < len(recs) else entry_count
        out += struct.pack("<IIII", ls, ll, es, end - es)
    return bytes(out + entries + pairs + arena.bytes)


LINE, LABELS, METADATA, TIMESTAMP = 1, 2, 4, 8


def response(n, verdicts=None, patches=(), added=()):
    """verdicts: {index: 1 drop}; patches: [(entry, ts, line, labels, metadata)] with None for
    unset fields (their verdict becomes 2); added: [(ts, line, labels, metadata)]."""
    arena = Arena()
    pairs = bytearray()
    pair_count = 0
    v = bytearray(n)
    for i, x in (verdicts or {}).items():
        v[i] = x

    def record(entry, ts, line, labels, metadata):
        nonlocal pairs, pair_count
        flags = 0
        flags |= LINE if line is not None else 0
        flags |= LABELS if labels is not None else 0
        flags |= METADATA if metadata is not None else 0
        flags |= TIMESTAMP if ts is not None else 0
        out = struct.pack("<IIq", entry, flags, ts or 0)
        out += arena.span(line) if line is not None else b"\0" * 8
        for s in (labels, metadata):
            start = pair_count
            for a, b in s or ():
                pairs += arena.span(a) + arena.span(b)
                pair_count += 1
            out += struct.pack("<II", start if s is not None else 0, pair_count - start)
        return out

    prec = bytearray()
    for p in patches:
        v[p[0]] = 2
        prec += record(*p)
    arec = bytearray()
    for a in added:
        arec += record(0xFFFFFFFF, *a)
    padded = (n + 3) // 4 * 4
    out = bytearray(b"SLCR" + struct.pack("<HH", 1, 0))
    out += struct.pack("<IIIIII", n, len(patches), len(added), pair_count, len(arena.bytes), 0)
    out += v + bytes(padded - n)
    return bytes(out + prec + arec + pairs + arena.bytes)


def plugin_batch():
    t = "plugin_batch"
    req = request("team-a", [
        ([("app", "api"), ("env", "prod")], [(1, "first line", [("trace_id", "t1")]), (2, "second", [])]),
        ([("app", "db")], [(3, "héllo wörld", [("k", "v"), ("k2", "")])]),
        ([("app", "empty")], []),
    ])
    write(t, "request", b"\x00" + req)
    write(t, "request-empty", b"\x00" + request("", []))
    # Responses to fixed batch 0 (6 entries: a1 a2 a3 | b1 b2 | (empty) | a4).
    write(t, "response-keep", b"\x01" + response(6))
    write(t, "response-drop-patch", b"\x01" + response(
        6, {1: 1, 3: 1},
        [(2, 30, "A3", None, None), (4, None, None, None, [("trace", "x")])]))
    write(t, "response-move", b"\x01" + response(
        6, {},
        [(0, None, None, [("app", "b"), ("env", "prod")], None),
         (1, None, None, [("level", "warn"), ("app", "a")], None),
         (3, None, "B1", [("env", "prod"), ("app", "b")], None),
         (5, -5, "moved", [("app", "new")], [("k", "v")])]))
    write(t, "response-added", b"\x01" + response(
        6, {0: 1},
        [],
        [(99, "summary", [("app", "a")], [("n", "1")]), (100, "elsewhere", [("app", "z")], [])]))
    write(t, "response-bad-label", b"\x01" + response(6, {}, [(0, None, None, [("a.b", "x")], None)]))
    write(t, "response-one", bytes([0x09]) + response(1, {}, [(0, 7, "x", [("service_name", "s")], [])]))
    write(t, "response-none", bytes([0x05]) + response(0, {}, [], [(1, "added", [("app", "a")], None)]))
    write(t, "response-nine", bytes([0x0D]) + response(
        9, {0: 1, 8: 1}, [(4, None, None, [("app", "x"), ("job", "j")], None)]))
    for i, mode in enumerate([0x02, 0x03, 0x02]):
        write(t, f"both-{i}", bytes([mode]) + noise(f"plugin{i}", 256))


# --- write-ahead log -----------------------------------------------------------------------

# The frame key of the wal_record target (its KEY).
FRAME_KEY = 0x5EED_F022
HEADER = 16


def frame(payload):
    check = xxhash.xxh3_64_intdigest(payload, seed=FRAME_KEY)
    return b"SLW\x02" + struct.pack("<IQ", len(payload), check) + payload


def rec_str32(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def rec_pairs(pairs):
    return struct.pack("<H", len(pairs)) + b"".join(rec_str32(n) + rec_str32(v) for n, v in pairs)


def record(tenant, sinks, streams):
    out = bytearray([1])
    t = tenant.encode()
    out += struct.pack("<H", len(t)) + t
    out.append(len(sinks))
    for s in sinks:
        out += bytes([len(s)]) + s.encode()
    out += struct.pack("<I", len(streams))
    for labels, entries in streams:
        out += rec_pairs(labels)
        out += struct.pack("<I", len(entries))
        for ts, line, md in entries:
            out += struct.pack("<q", ts) + rec_str32(line) + rec_pairs(md)
    return bytes(out)


def wal_record():
    t = "wal_record"
    r1 = record("fake", ["loki", "archive"], [
        ([("app", "api"), ("env", "prod")], [(NOW, "first ✓", [("trace_id", "abc")]), (2**63 - 1, "", [])]),
        ([], []),
    ])
    r2 = record("team-b", ["loki"], [([("level", "warn"), ("app", "db")], [(-5, "unsorted labels", [])])])
    r3 = record("", [], [])
    seg = frame(r1) + frame(r2) + frame(r3)
    write(t, "segment", b"\x00" + seg)
    damaged = bytearray(seg)
    damaged[HEADER + 5] ^= 0xFF
    write(t, "segment-damaged", b"\x00" + bytes(damaged))
    write(t, "segment-torn", b"\x00" + seg + frame(r1)[:20])
    write(t, "segment-short-end", bytes([0x58]) + seg)
    write(t, "segment-long-end", bytes([0xEC]) + seg)
    write(t, "segment-garbage", b"\x00" + b"garbage" + frame(r2) + b"SLW\x02\xff\xff\xff\x3f" + frame(r3))
    # One flipped bit in a record whose line holds a magic and a length past the end: the
    # search after the damage stops at that fake header, as at a torn tail.
    a = record("fake", ["loki"], [([("app", "api")], [(NOW, "user text SLW\x02\x7f\x7f\x7f\x3f end", [])])])
    b = record("fake", ["loki"], [([("app", "api")], [(NOW, "a later, intact record", [])])])
    seg2 = bytearray(frame(a) + frame(b))
    seg2[HEADER + 3] ^= 0x01
    write(t, "segment-damage-embedded-magic", b"\x00" + bytes(seg2))
    pieces = b""
    for p in (r1, b"junk", r2, b"", r3):
        if p == b"junk":
            pieces += bytes([0x80 | len(p)]) + p
        else:
            pieces += bytes([min(len(p), 0x7F)]) + p[:0x7F]
    write(t, "pieces", b"\x01" + pieces)
    for i in range(3):
        write(t, f"encoded-{i}", b"\x02" + noise(f"wal{i}", 200))


if __name__ == "__main__":
    push_protobuf()
    push_json()
    plugin_batch()
    wal_record()
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    count = sum(1 for f in ROOT.rglob("*") if f.is_file())
    print(f"{count} seeds, {total} bytes, in {ROOT}")
