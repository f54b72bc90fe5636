#!/usr/bin/python3
"""Runs every micro-benchmark (bench/micro/*.cc, Google Benchmark) built by the
`micro_benchmarks` target, pinned to one CPU, and saves the output under bench/results/."""

import argparse
import datetime
import os
import re
import shutil
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--full", action="store_true", help="longer minimum time per benchmark")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--filter", default="", help="--benchmark_filter regex")
    args, _ = ap.parse_known_args()
    names = []
    for f in sorted(os.listdir(os.path.join(ROOT, "bench/micro"))):
        if f.endswith(".cmake"):
            with open(os.path.join(ROOT, "bench/micro", f)) as fh:
                names += re.findall(r"^\s*evnet_micro\(\s*(\w+)", fh.read(), re.M)
    if not names:
        print("bench: no micro-benchmarks registered in bench/micro/*.cmake", file=sys.stderr)
        return 1
    out = []
    failed = 0
    min_time = "1.0" if args.full else "0.2"
    for name in names:
        exe = os.path.join(args.build_dir, "bench", name)
        if not os.access(exe, os.X_OK):
            msg = "%s: skipped: not built (Google Benchmark or a dependency missing)" % name
            print("bench: " + msg, file=sys.stderr)
            out.append("## %s\n\n%s\n" % (name, msg))
            continue
        print("bench: running %s …" % name, file=sys.stderr, flush=True)
        cmd = [exe, "--benchmark_min_time=%s" % min_time]
        if args.filter:
            cmd.append("--benchmark_filter=" + args.filter)
        if shutil.which("taskset"):
            cmd = ["taskset", "-c", "1"] + cmd
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            text, rc = r.stdout + r.stderr, r.returncode
        except subprocess.TimeoutExpired:
            text, rc = "timed out after 600 s", -1
        print(text)
        if rc != 0:
            failed += 1
        out.append("## %s%s\n\n```\n%s```\n" % (name, "" if rc == 0 else " (FAILED)", text))
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    host = socket.gethostname().split(".")[0]
    path = os.path.join(ROOT, "bench/results", "%s-%s-micro.md" % (stamp, host))
    with open(path, "w") as f:
        f.write("# evnet micro-benchmarks: %s, %s\n\n" % (stamp, host) + "\n".join(out))
    print("bench: micro-benchmark output in %s" % os.path.relpath(path, ROOT), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
