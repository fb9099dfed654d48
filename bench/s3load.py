#!/usr/bin/env python3
"""Load generator for bench/s3.sh: PUT/GET rates over S3 (boto3, one client
per thread of a ThreadPoolExecutor) or through a directory (the FUSE mount:
write+fsync+close, read), with the serving daemon's CPU time and peak RSS
per case.

  s3load.py suite --target s3 --endpoint URL --access AK --secret SK \
      --system NAME --round R --pid PID --out results.tsv
  s3load.py suite --target fs --dir DIR --system NAME --round R --pid PID --out results.tsv
  s3load.py table results.tsv [rss.tsv]

A suite runs, for each size (64 MiB, 4 KiB) and each client count (1, 16):
PUT N objects under a fresh prefix, then a `sync` (timed apart), then GET
every object that PUT wrote. N is max(LARGE_N, clients) for 64 MiB and
SMALL_N for 4 KiB; a case stops starting new requests after --max-secs (the
rate is then over the objects done). Before each case the daemon's VmHWM is
reset (`echo 5 > /proc/PID/clear_refs`), after it VmHWM is read: the peak
RSS of that case alone. Each row of results.tsv:

  system round target op size clients ops bytes secs sync_secs errors cpu_s hwm_kib rss0_kib

Checksums: the client computes none beyond what S3 requires (boto3's
request_checksum_calculation=when_required), so both servers see the same
requests: SigV4 with a SHA-256 of the payload (plain HTTP), no CRC trailers.
Every PUT's ETag is checked against the body's MD5 and every GET's length.
"""
import argparse
import collections
import hashlib
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MIB = 1 << 20


def proc_cpu_s(pid):
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # utime, stime are fields 14, 15 (1-based); after the ')' split
        # field 3 is index 0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def proc_status(pid, name):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_hwm(pid):
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class S3Target:
    def __init__(self, a, clients):
        import boto3
        from botocore.config import Config

        cfg = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
            read_timeout=300,
            connect_timeout=10,
            max_pool_connections=4,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.bucket = a.bucket
        # one client per worker thread, made here (client creation is not
        # thread-safe); each keeps its own keep-alive connection
        self.clients = []
        for _ in range(clients):
            s = boto3.session.Session()
            self.clients.append(s.client(
                "s3", endpoint_url=a.endpoint, aws_access_key_id=a.access,
                aws_secret_access_key=a.secret, region_name="us-east-1", config=cfg))
        c = self.clients[0]
        try:
            c.head_bucket(Bucket=self.bucket)
        except c.exceptions.ClientError:
            c.create_bucket(Bucket=self.bucket)
        for c in self.clients:  # open every connection before timing
            c.head_bucket(Bucket=self.bucket)

    def prepare(self, prefix):
        pass

    def put(self, w, key, body, md5):
        r = self.clients[w].put_object(Bucket=self.bucket, Key=key, Body=body)
        if r["ETag"].strip('"') != md5:
            raise RuntimeError(f"ETag {r['ETag']} != {md5} for {key}")

    def get(self, w, key, buf):
        body = self.clients[w].get_object(Bucket=self.bucket, Key=key)["Body"]
        n = 0
        for chunk in body.iter_chunks(MIB):
            n += len(chunk)
        return n


class FsTarget:
    def __init__(self, a, clients):
        self.dir = a.dir
        os.makedirs(self.dir, exist_ok=True)

    def prepare(self, prefix):
        os.makedirs(os.path.join(self.dir, prefix), exist_ok=True)

    def put(self, w, key, body, md5):
        fd = os.open(os.path.join(self.dir, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            mv = memoryview(body)
            off = 0
            while off < len(mv):
                off += os.write(fd, mv[off:off + MIB])
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, w, key, buf):
        fd = os.open(os.path.join(self.dir, key), os.O_RDONLY)
        n = 0
        try:
            while True:
                r = os.readv(fd, [buf])
                if r == 0:
                    return n
                n += r
        finally:
            os.close(fd)


def run_case(target, op, keys, clients, size, body, md5, max_secs):
    """Run `op` over `keys` with `clients` workers; returns (done keys, secs, errors)."""
    lock = threading.Lock()
    it = iter(range(len(keys)))
    done = []
    errors = []
    t0 = time.monotonic()
    deadline = t0 + max_secs

    def worker(w):
        buf = bytearray(MIB)
        while True:
            if time.monotonic() > deadline:
                return
            with lock:
                i = next(it, None)
            if i is None:
                return
            k = keys[i]
            try:
                if op == "put":
                    target.put(w, k, body, md5)
                else:
                    n = target.get(w, k, buf)
                    if n != size:
                        raise RuntimeError(f"GET {k}: {n} bytes, expected {size}")
                with lock:
                    done.append(k)
            except Exception as e:  # counted and shown, the case goes on
                with lock:
                    errors.append(f"{op} {k}: {e!r}")

    with ThreadPoolExecutor(max_workers=clients) as ex:
        for f in [ex.submit(worker, w) for w in range(clients)]:
            f.result()
    secs = time.monotonic() - t0
    return done, secs, errors


def suite(a):
    sizes = [(64 * MIB, "64MiB"), (4096, "4KiB")]
    if a.sizes:
        sizes = [s for s in sizes if s[1] in a.sizes.split(",")]
    clients_list = [int(c) for c in a.clients.split(",")]
    targets = {}
    out = open(a.out, "a")
    rss0 = proc_status(a.pid, "VmRSS") if a.pid else 0
    for size, label in sizes:
        body = os.urandom(size)
        md5 = hashlib.md5(body).hexdigest()
        for clients in clients_list:
            if clients not in targets:
                targets[clients] = (S3Target if a.target == "s3" else FsTarget)(a, clients)
            t = targets[clients]
            n = max(a.large_n, clients) if size >= MIB else a.small_n
            prefix = f"r{a.round}-{label}-{clients}c"
            t.prepare(prefix)
            keys = [f"{prefix}/obj-{i:06d}" for i in range(n)]
            os.sync()
            for op in ["put", "get"]:
                todo = keys
                if a.pid:
                    reset_hwm(a.pid)
                c0 = proc_cpu_s(a.pid)
                u0 = sum(os.times()[:2])
                done, secs, errors = run_case(t, op, todo, clients, size, body, md5, a.max_secs)
                cpu = proc_cpu_s(a.pid) - c0
                ucpu = sum(os.times()[:2]) - u0
                sync_s = 0.0
                if op == "put":
                    s0 = time.monotonic()
                    os.sync()  # dirty pages of the PUT, written before the GET
                    sync_s = time.monotonic() - s0
                    keys = sorted(done)
                hwm = proc_status(a.pid, "VmHWM") if a.pid else 0
                rate = len(done) * size / MIB / secs if size >= MIB else len(done) / secs
                unit = "MiB/s" if size >= MIB else "ops/s"
                print(f"  {a.system:<10} r{a.round} {a.target} {op:<3} {label:>5} {clients:>2}c: "
                      f"{len(done):>5} in {secs:6.2f}s = {rate:8.1f} {unit}  sync {sync_s:5.2f}s  "
                      f"cpu {cpu:6.2f}s (client {ucpu:6.2f}s)  VmHWM {hwm / 1024:7.1f} MiB"
                      + (f"  ERRORS {len(errors)}: {errors[0]}" if errors else ""), flush=True)
                out.write("\t".join(str(x) for x in [
                    a.system, a.round, a.target, op, label, clients, len(done), len(done) * size,
                    f"{secs:.4f}", f"{sync_s:.4f}", len(errors), f"{cpu:.3f}", hwm, rss0]) + "\n")
                out.flush()
                if errors:
                    with open(a.out + ".errors", "a") as ef:
                        for e in errors[:20]:
                            ef.write(f"{a.system} r{a.round} {a.target} {op} {label} {clients}c: {e}\n")


def fmt(vals, prec=1):
    m = statistics.median(vals)
    if len(vals) == 1:
        return f"{m:.{prec}f}"
    return f"{m:.{prec}f} ({min(vals):.{prec}f}-{max(vals):.{prec}f})"


def table(a):
    rows = [l.rstrip("\n").split("\t") for l in open(a.results) if l.strip()]
    rate = collections.defaultdict(list)      # (system/target, op, label, clients) -> [rate]
    durable = collections.defaultdict(list)   # PUT rate counting the sync after it
    cpu = collections.defaultdict(list)       # CPU s per GiB (large) or us per op (small)
    hwm = collections.defaultdict(list)
    errs = collections.Counter()
    for (system, rnd, target, op, label, clients, ops, nbytes, secs, sync_s, nerr, cpu_s,
         hwm_kib, rss0) in rows:
        col = "fuse" if target == "fs" else system
        k = (col, op, label, int(clients))
        ops, nbytes, secs, sync_s, cpu_s = int(ops), int(nbytes), float(secs), float(sync_s), float(cpu_s)
        large = label != "4KiB"
        if ops == 0 or secs <= 0:
            errs[k] += int(nerr)
            continue
        rate[k].append(nbytes / MIB / secs if large else ops / secs)
        if op == "put":
            durable[k].append(nbytes / MIB / (secs + sync_s) if large else ops / (secs + sync_s))
        cpu[k].append(cpu_s / (nbytes / (1 << 30)) if large else cpu_s / ops * 1e6)
        if int(hwm_kib):
            hwm[k].append(int(hwm_kib) / 1024)
        errs[k] += int(nerr)
    cols = [c for c in ["shardfs", "s3s-fs", "fuse"] if any(k[0] == c for k in rate)]
    names = {"shardfs": "shardfs S3", "s3s-fs": "s3s-fs", "fuse": "shardfs FUSE"}
    nclients = sorted({k[3] for k in rate})
    order = [(op, label, c) for label in ["64MiB", "4KiB"] for c in nclients for op in ["put", "get"]]
    order = [o for o in order if any(k[1:] == o for k in rate)]

    def row_name(op, label, c):
        return f"{op.upper()} {label} {c:>2} client{'s' if c > 1 else ' '}"

    def unit(label):
        return "MiB/s" if label != "4KiB" else "ops/s"

    w = 24
    print("Rates: median of rounds (min-max); ratio = shardfs S3 median / s3s-fs median")
    print(f"{'case':<28}{'unit':<7}" + "".join(f"{names[c]:>{w}}" for c in cols)
          + (f"{'S3 ratio':>10}" if "s3s-fs" in cols and "shardfs" in cols else ""))
    for op, label, c in order:
        line = f"{row_name(op, label, c):<28}{unit(label):<7}"
        for col in cols:
            v = rate.get((col, op, label, c))
            line += f"{fmt(v) if v else '-':>{w}}"
        a_, b_ = rate.get(("shardfs", op, label, c)), rate.get(("s3s-fs", op, label, c))
        if a_ and b_:
            line += f"{statistics.median(a_) / statistics.median(b_):>9.2f}x"
        print(line)
    if durable:
        print()
        print("PUT counting the `sync` after it (s3s-fs does not fsync; shardfs S3 and the FUSE runs do)")
        for op, label, c in order:
            if op != "put":
                continue
            line = f"{row_name(op, label, c) + ' +sync':<28}{unit(label):<7}"
            for col in cols:
                v = durable.get((col, op, label, c))
                line += f"{fmt(v) if v else '-':>{w}}"
            a_, b_ = durable.get(("shardfs", op, label, c)), durable.get(("s3s-fs", op, label, c))
            if a_ and b_:
                line += f"{statistics.median(a_) / statistics.median(b_):>9.2f}x"
            print(line)
    print()
    print("Daemon CPU (user+sys, all threads): s per GiB for 64 MiB, us per op for 4 KiB; medians")
    print(f"{'case':<28}{'unit':<7}" + "".join(f"{names[c]:>{w}}" for c in cols))
    for op, label, c in order:
        line = f"{row_name(op, label, c):<28}{'s/GiB' if label != '4KiB' else 'us/op':<7}"
        for col in cols:
            v = cpu.get((col, op, label, c))
            line += f"{fmt(v, 2 if label != '4KiB' else 0) if v else '-':>{w}}"
        print(line)
    print()
    print("Daemon peak RSS (VmHWM, reset before each case) in MiB: median (min-max)")
    print(f"{'case':<28}{'':<7}" + "".join(f"{names[c]:>{w}}" for c in cols))
    for op, label, c in order:
        line = f"{row_name(op, label, c):<28}{'MiB':<7}"
        for col in cols:
            v = hwm.get((col, op, label, c))
            line += f"{fmt(v) if v else '-':>{w}}"
        print(line)
    bad = {k: v for k, v in errs.items() if v}
    if bad:
        print()
        for k, v in sorted(bad.items()):
            print(f"ERRORS: {names[k[0]]} {row_name(*k[1:])}: {v} (see results.tsv.errors)")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--target", choices=["s3", "fs"], required=True)
    s.add_argument("--endpoint")
    s.add_argument("--access")
    s.add_argument("--secret")
    s.add_argument("--bucket", default="bench")
    s.add_argument("--dir")
    s.add_argument("--system", required=True)
    s.add_argument("--round", type=int, default=1)
    s.add_argument("--pid", type=int, default=0)
    s.add_argument("--out", required=True)
    s.add_argument("--clients", default="1,16")
    s.add_argument("--sizes", default="")
    s.add_argument("--large-n", type=int, default=int(os.environ.get("LARGE_N", 8)))
    s.add_argument("--small-n", type=int, default=int(os.environ.get("SMALL_N", 2000)))
    s.add_argument("--max-secs", type=float, default=float(os.environ.get("CASE_MAX_SECS", 6)))
    t = sub.add_parser("table")
    t.add_argument("results")
    a = p.parse_args()
    if a.cmd == "suite":
        suite(a)
    else:
        table(a)


if __name__ == "__main__":
    main()
