#!/usr/bin/python3
"""evnet benchmark orchestrator (driven by scripts/bench; see bench/README.md).

Servers take turns within each case: every round runs each server once, in a rotated order, so
the machine's minute-to-minute drift (30% on this shared 2-core box) hits all of them alike. The
table shows medians with the min-max spread, ratios to raw epoll and to evnet, and the
per-message costs: server CPU time (which drifts with the machine too: the goals compare it
within each round), system calls (perf, else strace) and, with --callgrind, user-space
instructions (these two do not drift).

Nothing here fakes a figure: a server binary that is missing is printed as "skipped: not built
yet"; a run that fails (startup, a mismatched byte, a lost echo) is printed as FAILED with the
reason, and the script exits non-zero if any verification failed.
"""

import argparse
import csv
import datetime
import glob
import os
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVER_CPU = "1"
LOAD_CPU = "0"

# --------------------------------------------------------------------------------------------
# Process bookkeeping: every child is registered and killed on any exit path.

_children = []


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    _children.append(p)
    return p


def stop(p, sig=signal.SIGTERM, wait=5.0):
    """Stops a child; returns its exit status (None if it had to be killed)."""
    if p.poll() is None:
        try:
            p.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            rc = None
        else:
            rc = p.returncode
    else:
        rc = p.returncode
    if p in _children:
        _children.remove(p)
    return rc


def kill_all():
    for p in list(_children):
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.time() + 3
    for p in list(_children):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    _children.clear()


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def pin(cpus, cmd):
    return ["taskset", "-c", cpus] + cmd if shutil.which("taskset") else cmd


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Servers


class Server:
    """One server binary and how to start it. kind: echo | http | ws | nginx.

    unavailable_status: the exit status with which the server says, at start-up, that this
    machine cannot run it (raw_uring_http: the kernel refused io_uring); its rows are then
    skipped with the reason it printed, not failed."""

    def __init__(self, key, label, path, args, kind, family, note="", env=None,
                 unavailable_status=None):
        self.key, self.label, self.path, self.args = key, label, path, args
        self.kind, self.family, self.note = kind, family, note
        self.env = env or {}  # added to the environment of this server only
        self.unavailable_status = unavailable_status

    def available(self):
        if self.kind == "nginx":
            return shutil.which("nginx") is not None
        return os.access(self.path, os.X_OK) and not self.build_failed()

    def build_failed(self):
        d = os.path.dirname(os.path.dirname(self.path))
        return os.path.exists(os.path.join(d, "bench-build-%s.failed" %
                                           os.path.basename(self.path)))

    def skip_reason(self):
        if self.kind == "nginx":
            return "nginx not installed"
        if self.build_failed():
            return "does not build at this commit (bench-build-%s.log)" % os.path.basename(
                self.path)
        return "not built yet (%s missing)" % os.path.relpath(self.path, ROOT)


class Unavailable(RuntimeError):
    """The server exited at start-up with its unavailable_status: not a failure of the run."""


class SkipReason(str):
    """A run's error string that means "skip this server's rows", not "FAILED"."""


def start_error(e):
    """The error string a load run returns when start_server raised `e`."""
    return SkipReason(str(e)) if isinstance(e, Unavailable) else str(e)


def last_line(path, offset=0):
    """The last non-empty line written to `path` after byte `offset`, or ""."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


class Running:
    def __init__(self, proc, port, pid, tmp=None):
        self.proc, self.port, self.pid, self.tmp = proc, port, pid, tmp


def wait_listening(proc, timeout):
    """Reads the server's stdout until 'listening on <port>'; returns the port or None."""
    deadline = time.time() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while time.time() < deadline:
        if proc.poll() is not None:
            return None
        r, _, _ = select.select([fd], [], [], 0.05)
        if not r:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
        m = re.search(rb"listening on (?:[\d.:\[\]a-fA-F]*:)?(\d+)\s*\n", buf)
        if m:
            return int(m.group(1))
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(srv, cpus=SERVER_CPU, extra=(), wrapper=(), timeout=10.0, logdir=None):
    """Starts srv pinned to `cpus`. Returns Running or raises RuntimeError."""
    if srv.kind == "nginx":
        return start_nginx(cpus, wrapper, timeout)
    errpath = os.path.join(logdir, srv.key + ".stderr") if logdir else None
    errlog = open(errpath, "ab") if errpath else subprocess.DEVNULL
    errstart = errlog.tell() if errpath else 0  # the log is shared by the server's runs
    cmd = pin(cpus, list(wrapper) + [srv.path, "--port", "0"] + list(srv.args) + list(extra))
    env = dict(os.environ, **srv.env) if srv.env else None
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=errlog, stdin=subprocess.DEVNULL,
                 preexec_fn=raise_nofile, env=env)
    port = wait_listening(proc, timeout)
    if port is None:
        try:
            # Its stdout can close a moment before it has exited: its own exit status is
            # wanted here, not SIGKILL's.
            proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        rc = stop(proc, signal.SIGKILL)
        if rc is not None and rc == srv.unavailable_status:
            why = last_line(errpath, errstart) if errpath else ""
            name = os.path.basename(srv.path) + ": "
            why = why[len(name):] if why.startswith(name) else why
            raise Unavailable(why or "unavailable on this machine (exit status %d)" % rc)
        raise RuntimeError("did not print 'listening on <port>' (exit %s)" % rc)
    return Running(proc, port, proc.pid)


def start_nginx(cpus, wrapper=(), timeout=10.0):
    tmp = tempfile.mkdtemp(prefix="evnet-bench-nginx-")
    port = free_port()
    with open(os.path.join(ROOT, "bench/nginx/nginx.conf.in")) as f:
        conf = f.read().replace("@DIR@", tmp).replace("@PORT@", str(port))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(conf)
    cmd = pin(cpus, list(wrapper) + ["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p",
                                     tmp + "/", "-e", os.path.join(tmp, "error.log")])
    proc = spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                 stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
    deadline = time.time() + timeout
    worker = None
    while time.time() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids:
                worker = int(kids[0])
                break
        except OSError:
            time.sleep(0.05)
    if worker is None:
        stop(proc, signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError("nginx did not start")
    # nginx's master only supervises; the one worker does all the work, so it is the process
    # whose CPU time and system calls are measured.
    return Running(proc, port, worker, tmp)


def stop_server(run):
    """SIGTERM; returns an error string if the server did not exit with status 0."""
    if run.tmp:  # nginx: SIGQUIT is its graceful stop; the master's status is what we check
        rc = stop(run.proc, signal.SIGQUIT)
        shutil.rmtree(run.tmp, ignore_errors=True)
        return None if rc == 0 else "nginx exit status %s" % rc
    if run.proc.poll() is None:
        run.proc.send_signal(signal.SIGTERM)
        try:
            run.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            # Under valgrind (3.19) a signal reaches a thread blocked in io_uring_enter only
            # when the call returns: one connection makes it return (seen with the io_uring
            # poller under callgrind; without valgrind the signal interrupts the wait).
            try:
                socket.create_connection(("127.0.0.1", run.port), timeout=1.0).close()
            except OSError:
                pass
    rc = stop(run.proc, signal.SIGTERM)
    if rc is None:
        return "did not exit within 7 s of SIGTERM"
    if rc != 0:
        return "exit status %d after SIGTERM" % rc
    return None


def proc_cpu_ns(loadgen, pid):
    r = subprocess.run([loadgen, "--print-cpu", str(pid)], capture_output=True, text=True)
    m = re.search(r"CPU_NS (\d+)", r.stdout)
    if m:
        return int(m.group(1))
    # Fallback: utime+stime from /proc (10 ms ticks).
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------
# Syscall counting: perf stat -e raw_syscalls:sys_enter, else strace -c -f.

PERF_EVENTS = ["raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_wait",
               "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_pwait2",
               "syscalls:sys_enter_epoll_ctl", "syscalls:sys_enter_io_uring_enter"]


def perf_works():
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-e", ",".join(PERF_EVENTS), "-x,", "true"],
                       capture_output=True, text=True)
    return r.returncode == 0 and "raw_syscalls:sys_enter" in r.stderr


class SyscallCounter:
    """Counts a server's system calls. With perf, the loadgen switches the counter on and off at
    the edges of its measured window (perf stat --control fifos); otherwise strace -c -f covers
    the whole load run."""

    def __init__(self, tool, pid, tmp):
        self.tool, self.pid, self.tmp = tool, pid, tmp
        self.out = os.path.join(tmp, "syscalls.%d.out" % pid)
        self.ctl = os.path.join(tmp, "perf.ctl")
        self.ack = os.path.join(tmp, "perf.ack")
        self.proc = None

    def start(self, windowed):
        if self.tool == "perf":
            cmd = ["perf", "stat", "-e", ",".join(PERF_EVENTS), "-x,", "-o", self.out,
                   "-p", str(self.pid)]
            if windowed:
                for f in (self.ctl, self.ack):
                    if os.path.exists(f):
                        os.unlink(f)
                    os.mkfifo(f)
                cmd[2:2] = ["-D", "-1", "--control", "fifo:%s,%s" % (self.ctl, self.ack)]
            self.proc = spawn(pin(SERVER_CPU, cmd), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
            if not windowed:
                time.sleep(0.3)  # let perf attach before the load starts
        else:
            self.proc = spawn(["strace", "-c", "-f", "-o", self.out, "-p", str(self.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)

    def loadgen_args(self):
        return ["--perf-ctl", self.ctl, "--perf-ack", self.ack] if self.tool == "perf" else []

    def finish(self):
        """Returns {"total": n, "wait": n, "ctl": n} or None: all system calls, the waits
        (epoll_wait/epoll_pwait/epoll_pwait2/io_uring_enter) and epoll_ctl calls."""
        stop(self.proc, signal.SIGINT, wait=10)
        try:
            with open(self.out) as f:
                text = f.read()
        except OSError:
            return None
        counts = {}
        if self.tool == "perf":
            for line in text.splitlines():
                parts = line.split(",")
                if len(parts) > 2 and parts[2] in PERF_EVENTS:
                    try:
                        counts[parts[2].split(":")[1].replace("sys_enter_", "")] = int(parts[0])
                    except ValueError:
                        pass
            if "sys_enter" not in counts:
                return None
            total = counts.pop("sys_enter")
        else:
            m = re.search(r"^\S+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?total", text, re.M)
            if not m:
                return None
            total = int(m.group(1))
            for name in ("epoll_wait", "epoll_pwait", "epoll_pwait2", "epoll_ctl",
                         "io_uring_enter"):
                mm = re.search(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?%s\s*$" %
                               name, text, re.M)
                counts[name] = int(mm.group(1)) if mm else 0
        return {"total": total, "ctl": counts.get("epoll_ctl", 0),
                "wait": sum(counts.get(n, 0) for n in ("epoll_wait", "epoll_pwait",
                                                        "epoll_pwait2", "io_uring_enter"))}


# --------------------------------------------------------------------------------------------
# Load runs


def parse_kv(line):
    return {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}


def run_loadgen(cfg, args, timeout):
    cmd = pin(LOAD_CPU, [cfg.loadgen] + args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           preexec_fn=raise_nofile)
    except subprocess.TimeoutExpired:
        return None, "load generator timed out after %.0f s" % timeout
    line = next((l for l in r.stdout.splitlines() if l.startswith("RESULT")), None)
    if r.returncode != 0 or line is None:
        why = r.stderr.strip().splitlines()
        why = why[0] if why else "exit status %d" % r.returncode
        if r.returncode == 1:
            cfg.verification_failed = True
            why = "ECHO MISMATCH: " + why
        return (parse_kv(line) if line else None), why
    return parse_kv(line), None


class Sample(dict):
    pass


SAMPLE_KEYS = ["msgs", "msgs_per_s", "p50_us", "p99_us", "cpu_ns_per_msg", "client_cpu"]


def echo_run(cfg, srv, case, count_syscalls=False, cpus=SERVER_CPU, extra=()):
    """One load run of an echo/ws case against srv. Returns (Sample, error)."""
    try:
        run = start_server(srv, cpus=cpus, extra=extra, logdir=cfg.tmp)
    except RuntimeError as e:
        return None, str(e)
    counter = None
    try:
        window = cfg.count_window if count_syscalls else cfg.window
        args = ["--port", str(run.port), "--conns", str(case["conns"]), "--size",
                str(case["size"]), "--depth", str(case.get("depth", 1)), "--duration",
                str(window), "--warmup", str(cfg.warmup), "--server-pid", str(run.pid),
                "--connect-timeout", "20"]
        if srv.kind == "ws":
            args.append("--ws")
        if count_syscalls:
            counter = SyscallCounter(cfg.syscall_tool, run.pid, cfg.tmp)
            counter.start(windowed=cfg.syscall_tool == "perf")
            args += counter.loadgen_args()
        res, err = run_loadgen(cfg, args, timeout=window + cfg.warmup + 60)
        s = Sample()
        if res:
            s["msgs_per_s"] = float(res["msgs_per_s"])
            s["msgs"] = int(res["msgs"])
            s["p50_us"] = float(res["p50_us"])
            s["p99_us"] = float(res["p99_us"])
            # The load generator prints 0.0 when it had no CPU clock for the server (or no
            # message in the window): not measured, so the key is left out and the table, the
            # CSVs and the CPU goals say so instead of treating 0 as a figure.
            cpu = float(res.get("server_cpu_ns_per_msg", 0) or 0)
            if cpu > 0:
                s["cpu_ns_per_msg"] = cpu
            s["client_cpu"] = float(res["client_cpu"])
        if counter:
            n = counter.finish()
            counter = None
            if n is not None and res:
                denom = int(res["msgs"]) if cfg.syscall_tool == "perf" else int(res["total_msgs"])
                if denom:
                    s["syscalls_per_msg"] = n["total"] / denom
                    s["waits_per_msg"] = n["wait"] / denom
                    s["ctl_per_msg"] = n["ctl"] / denom
        if err:
            return None, err
        return s, None
    finally:
        if counter:
            counter.finish()
        serr = stop_server(run)
        if serr:
            cfg.notes.append("%s: %s" % (srv.label, serr))


def wrk_command(case, port, secs):
    """wrk on one thread against /plaintext, pipelined through bench/wrk/pipeline.lua if the case
    asks for it."""
    url = "http://127.0.0.1:%d" % port
    cmd = ["wrk", "-t1", "-c%d" % case["conns"], "-d%ds" % secs, "--latency", "--timeout", "5s"]
    if case.get("pipeline"):
        return cmd + ["-s", os.path.join(ROOT, "bench/wrk/pipeline.lua"), url, "--",
                      "/plaintext", str(case["pipeline"])]
    return cmd + [url + "/plaintext"]


def wrk_run(cfg, srv, case, count_syscalls=False):
    try:
        run = start_server(srv, logdir=cfg.tmp)
    except RuntimeError as e:
        return None, start_error(e)
    counter = None
    try:
        if srv.key not in cfg.http_checked:
            err = check_http(run.port)
            if err:
                return None, "HTTP check failed: " + err
            cfg.http_checked.add(srv.key)
        dur = cfg.count_wrk_secs if count_syscalls else cfg.wrk_secs
        cmd = wrk_command(case, run.port, dur)
        if count_syscalls:
            counter = SyscallCounter(cfg.syscall_tool, run.pid, cfg.tmp)
            counter.start(windowed=False)
        cpu0 = proc_cpu_ns(cfg.loadgen, run.pid)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.time()
        try:
            r = subprocess.run(pin(LOAD_CPU, cmd), capture_output=True, text=True,
                               timeout=dur + 30)
        except subprocess.TimeoutExpired:
            return None, "wrk timed out"
        cpu1 = proc_cpu_ns(cfg.loadgen, run.pid)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.time() - t0
        out = r.stdout
        m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", out)
        if r.returncode != 0 or not m:
            return None, "wrk failed: " + (r.stderr.strip() or out.strip())[:200]
        reqs = int(m.group(1))
        secs = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
        s = Sample()
        s["msgs"] = reqs
        s["msgs_per_s"] = reqs / secs if secs else 0.0
        if reqs and cpu1 > cpu0:  # otherwise not measured: the key is left out
            s["cpu_ns_per_msg"] = (cpu1 - cpu0) / reqs
        s["client_cpu"] = ((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)) / wall
        for q, key in (("50", "p50_us"), ("99", "p99_us")):
            mq = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s)\s*$" % q, out, re.M)
            if mq:
                mult = {"us": 1.0, "ms": 1e3, "s": 1e6}[mq.group(2)]
                if float(mq.group(1)) > 0:  # wrk prints 0.00us when it kept no samples
                    s[key] = float(mq.group(1)) * mult
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if bad:
            return None, "%s non-2xx responses" % bad.group(1)
        serr = re.search(r"Socket errors: (.*)", out)
        if serr:
            cfg.notes.append("%s (%s): wrk socket errors: %s" % (srv.label, case["title"],
                                                                serr.group(1)))
        if counter:
            n = counter.finish()
            counter = None
            if n is not None and reqs:
                s["syscalls_per_msg"] = n["total"] / reqs
                s["waits_per_msg"] = n["wait"] / reqs
                s["ctl_per_msg"] = n["ctl"] / reqs
        return s, None
    finally:
        if counter:
            counter.finish()
        serr = stop_server(run)
        if serr:
            cfg.notes.append("%s: %s" % (srv.label, serr))


def check_http(port):
    """GET /plaintext twice, pipelined in one write: both answers must be 200 'Hello, World!'."""
    req = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(req * 2)
        data = b""
        deadline = time.time() + 3
        while data.count(b"Hello, World!") < 2 and time.time() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    if data.count(b"HTTP/1.1 200") != 2 or data.count(b"Hello, World!") != 2:
        return "unexpected answer %r" % data[:200]
    return None


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


def idle_run(cfg, srv, conns):
    """User-space RSS growth per idle connection, measured twice on one server: with `conns`
    connections that never sent a byte (once the server holds them all: its fd count says so),
    then after one 16-byte echo on each (buffers a server allocates on first use show here)."""
    try:
        run = start_server(srv, logdir=cfg.tmp)
    except RuntimeError as e:
        return None, str(e)
    hold = None
    try:
        # Warm the server with one connection first, so one-time lazy allocations (first buffer,
        # first connection object) are in the baseline, not charged to the idle connections.
        res, err = run_loadgen(cfg, ["--port", str(run.port), "--conns", "1", "--size", "64",
                                     "--duration", "0.05", "--warmup", "0"], timeout=30)
        if err:
            return None, "warm-up: " + err
        time.sleep(0.1)
        base = rss_kib(run.pid)
        base_fds = fd_count(run.pid)
        hold = spawn(pin(LOAD_CPU, [cfg.loadgen, "--idle-wait-ping", "--port", str(run.port),
                                    "--conns", str(conns), "--size", "16", "--duration", "120",
                                    "--connect-timeout", "60"]),
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     preexec_fn=raise_nofile)
        fd = hold.stdout.fileno()
        buf = b""

        def wait_line(prefix, timeout):
            nonlocal buf
            deadline = time.time() + timeout
            while time.time() < deadline:
                for line in buf.split(b"\n")[:-1]:
                    if line.startswith(prefix):
                        return line.decode()
                r, _, _ = select.select([fd], [], [], 0.2)
                if r:
                    chunk = os.read(fd, 4096)
                    if not chunk:
                        return None
                    buf += chunk
            return None

        line = wait_line(b"CONNECTED", 90)
        if line is None:
            return None, "idle connections not established"
        n = int(parse_kv(line).get("conns", conns))
        deadline = time.time() + 30
        while fd_count(run.pid) < base_fds + n and time.time() < deadline:
            time.sleep(0.05)
        if fd_count(run.pid) < base_fds + n:
            return None, "server holds only %d of %d connections" % (
                fd_count(run.pid) - base_fds, n)
        time.sleep(0.3)
        connected = rss_kib(run.pid)
        hold.stdin.write(b"ping\n")
        hold.stdin.flush()
        if wait_line(b"READY", 60) is None:
            return None, "idle echoes unanswered"
        time.sleep(0.3)  # let the server finish any per-connection work after the echo
        full = rss_kib(run.pid)
        s = Sample()
        s["rss_base_kib"] = base
        s["rss_connected_kib"] = connected
        s["rss_full_kib"] = full
        s["conns"] = n
        s["bytes_per_conn_unused"] = (connected - base) * 1024.0 / n if n else 0.0
        s["bytes_per_conn"] = (full - base) * 1024.0 / n if n else 0.0
        return s, None
    finally:
        if hold:
            try:
                hold.stdin.close()
            except OSError:
                pass
            stop(hold, signal.SIGTERM, wait=10)
        serr = stop_server(run)
        if serr:
            cfg.notes.append("%s: %s" % (srv.label, serr))


def callgrind_run(cfg, srv, case, messages):
    """Runs srv under callgrind for `messages` echoes; returns (total Ir, messages echoed)."""
    out = os.path.join(cfg.tmp, "callgrind.%s.%d.out" % (srv.key, messages))
    wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
    try:
        run = start_server(srv, wrapper=wrapper, timeout=60, logdir=cfg.tmp)
    except RuntimeError as e:
        return None, str(e)
    try:
        args = ["--port", str(run.port), "--conns", str(case["conns"]), "--size",
                str(case["size"]), "--messages", str(messages), "--duration", "0",
                "--warmup", "0", "--max-time", "240", "--connect-timeout", "60"]
        if srv.kind == "ws":
            args.append("--ws")
        res, err = run_loadgen(cfg, args, timeout=300)
        if err:
            return None, err
        total = int(res["total_msgs"])
    finally:
        serr = stop_server(run)
        if serr:
            cfg.notes.append("%s under callgrind: %s" % (srv.label, serr))
    ir, err = callgrind_total(out)
    return (None, err) if err else ((ir, total), None)


def callgrind_total(path):
    """(total Ir, None) from one callgrind profile, or (None, error)."""
    try:
        with open(path) as f:
            m = re.search(r"^(?:totals|summary):\s*(\d+)", f.read(), re.M)
    except OSError:
        return None, "callgrind wrote no profile"
    if not m:
        return None, "no totals in the callgrind profile " + os.path.basename(path)
    return int(m.group(1)), None


def callgrind_wrk_run(cfg, srv, case, secs):
    """Runs srv under callgrind while wrk drives `case` for `secs` seconds; returns ((total Ir of
    all the server's processes, requests answered), None) or (None, error). nginx's worker is a
    fork of its master, so every process writes its own profile (%p) and they are summed; the
    worker runs as another user (nobody), so the profiles go to a directory anyone may write."""
    cgdir = tempfile.mkdtemp(prefix="evnet-bench-callgrind-")
    try:
        os.chmod(cgdir, 0o1777)
        return callgrind_wrk_profiles(cfg, srv, case, secs, os.path.join(cgdir, "callgrind"))
    finally:
        shutil.rmtree(cgdir, ignore_errors=True)


def callgrind_wrk_profiles(cfg, srv, case, secs, stem):
    wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=%s.%%p.out" % stem]
    try:
        run = start_server(srv, wrapper=wrapper, timeout=60, logdir=cfg.tmp)
    except RuntimeError as e:
        return None, str(e)
    try:
        try:
            r = subprocess.run(pin(LOAD_CPU, wrk_command(case, run.port, secs)),
                               capture_output=True, text=True, timeout=secs + 60)
        except subprocess.TimeoutExpired:
            return None, "wrk timed out"
        m = re.search(r"^\s*(\d+) requests in", r.stdout, re.M)
        if r.returncode != 0 or not m:
            return None, "wrk failed: " + (r.stderr.strip() or r.stdout.strip())[:200]
        reqs = int(m.group(1))
    finally:
        serr = stop_server(run)
        if serr:
            cfg.notes.append("%s under callgrind: %s" % (srv.label, serr))
    total = 0
    profiles = glob.glob(stem + ".*.out")
    for path in profiles:
        ir, err = callgrind_total(path)
        if err:
            return None, err
        total += ir
    if not profiles:
        return None, "callgrind wrote no profile"
    return (total, reqs), None


# --------------------------------------------------------------------------------------------
# Statistics and output


def med(values):
    return statistics.median(values) if values else None


def fmt_num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return "{:,.0f}".format(v)
    return "{:,.{}f}".format(v, digits)


def fmt_ratio(v):
    return "–" if v is None else "%.2f×" % v


class CaseResult:
    def __init__(self, key, title, kind, unit="msgs/s"):
        self.key, self.title, self.kind, self.unit = key, title, kind, unit
        self.rows = []  # (Server, samples list, counting Sample or None, error or None)
        self.instr = {}  # server key -> instructions per message
        self.instr1 = {}  # server key -> instructions per message over 1 connection
        # server key -> (total instructions ÷ messages of the longer run, messages): start-up
        # included, as the brief measures ("total Ir ÷ messages")
        self.instr_total = {}
        self.skipped = []  # (label, reason)
        self.ref_raw = None
        self.ref_evnet = None
        self.footnote = ""


def summarize(row_samples, key):
    vals = [s[key] for s in row_samples if s and key in s]
    if not vals:
        return None, None, None
    return med(vals), min(vals), max(vals)


def case_table(cr, with_instr):
    """Markdown table for one case."""
    lines = []
    if cr.kind == "idle":
        lines.append("| server | RSS before | RSS with %s never-used conns | bytes/conn never used | "
                     "RSS after one echo each | bytes/conn after one echo | × raw epoll | "
                     "× evnet |" % fmt_num(cr.conns))
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        raw = cr.ref_value("raw")
        ev = cr.ref_value("evnet")
        for srv, samples, _, err in cr.rows:
            if err:
                lines.append("| %s | FAILED: %s | | | | | | |" % (srv.label, err))
                continue
            s = samples[0]
            b = s["bytes_per_conn"]
            lines.append("| %s | %s KiB | %s KiB | %s | %s KiB | %s | %s | %s |" % (
                srv.label, fmt_num(s["rss_base_kib"]), fmt_num(s["rss_connected_kib"]),
                fmt_num(s["bytes_per_conn_unused"]), fmt_num(s["rss_full_kib"]), fmt_num(b),
                fmt_ratio(b / raw if raw else None), fmt_ratio(b / ev if ev else None)))
        for label, why in cr.skipped:
            lines.append("| %s | skipped: %s | | | | | | |" % (label, why))
        return "\n".join(lines)
    unit = cr.unit
    hdr = ("| server | %s median (min–max) | × raw | × evnet | p99 µs | load gen CPU | CPU µs/%s "
           "| CPU × raw | CPU × evnet | syscalls/%s | of which waits | of which epoll_ctl |" % (
               unit, cr.per, cr.per))
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    if with_instr:
        hdr += " instr/%s |" % cr.per
        sep += "---:|"
        if cr.instr1:
            hdr += " instr/%s, 1 conn |" % cr.per
            sep += "---:|"
        if cr.instr_total:
            hdr += " total instr ÷ %ss (start-up included) |" % cr.per
            sep += "---:|"
    lines += [hdr, sep]
    raw_rate = cr.stat("raw", "msgs_per_s")
    ev_rate = cr.stat("evnet", "msgs_per_s")
    raw_cpu = cr.stat("raw", "cpu_ns_per_msg")
    ev_cpu = cr.stat("evnet", "cpu_ns_per_msg")
    for srv, samples, counting, err in cr.rows:
        if err:
            cells = ["FAILED: " + err] + [""] * (10 + (1 if with_instr else 0))
            lines.append("| %s | %s |" % (srv.label, " | ".join(cells)))
            continue
        rate, lo, hi = summarize(samples, "msgs_per_s")
        p99, _, _ = summarize(samples, "p99_us")
        cpu, _, _ = summarize(samples, "cpu_ns_per_msg")
        client, _, _ = summarize(samples, "client_cpu")
        sc = counting.get("syscalls_per_msg") if counting else None
        waits = counting.get("waits_per_msg") if counting else None
        ctl = counting.get("ctl_per_msg") if counting else None
        cells = [
            "%s (%s–%s)" % (fmt_num(rate), fmt_num(lo), fmt_num(hi)),
            fmt_ratio(rate / raw_rate if raw_rate and rate else None),
            fmt_ratio(rate / ev_rate if ev_rate and rate else None),
            fmt_num(p99),
            "%.0f%%" % (client * 100) if client is not None else "–",
            fmt_num(cpu / 1000.0 if cpu else None, 2),
            fmt_ratio(cpu / raw_cpu if raw_cpu and cpu else None),
            fmt_ratio(cpu / ev_cpu if ev_cpu and cpu else None),
            fmt_num(sc, 2),
            fmt_num(waits, 3),
            fmt_num(ctl, 3),
        ]
        if with_instr:
            cells.append(fmt_num(cr.instr.get(srv.key)))
            if cr.instr1:
                cells.append(fmt_num(cr.instr1.get(srv.key)))
            if cr.instr_total:
                cells.append(fmt_num(cr.instr_total.get(srv.key, (None,))[0]))
        lines.append("| %s | %s |" % (srv.label, " | ".join(cells)))
    for label, why in cr.skipped:
        lines.append("| %s | skipped: %s |%s" % (label, why,
                                                  " |" * (10 + (1 if with_instr else 0))))
    return "\n".join(lines)


def add_case_helpers(cr):
    def row_for(family):
        for srv, samples, counting, err in cr.rows:
            if srv.family == family and not err:
                return srv, samples
        return None, None

    def stat(family, key):
        srv, samples = row_for(family)
        return summarize(samples, key)[0] if samples else None

    def ref_value(family):
        srv, samples = row_for(family)
        return samples[0]["bytes_per_conn"] if samples else None

    cr.stat = stat
    cr.ref_value = ref_value


def plot_case(cfg, cr, png):
    if not shutil.which("gnuplot") or cr.kind == "idle" and not cr.rows:
        return False
    dat = png[:-4] + ".dat"
    rows = []
    for srv, samples, _, err in cr.rows:
        if err:
            continue
        label = srv.label.replace(" ", "_").replace('"', "")
        if cr.kind == "idle":
            rows.append("%s %f %f" % (label, samples[0]["bytes_per_conn_unused"],
                                      samples[0]["bytes_per_conn"]))
        else:
            r, lo, hi = summarize(samples, "msgs_per_s")
            c, clo, chi = summarize(samples, "cpu_ns_per_msg")
            rows.append("%s %f %f %f %f %f %f" % (label, r, lo, hi, (c or 0) / 1e3,
                                                  (clo or 0) / 1e3, (chi or 0) / 1e3))
    if not rows:
        return False
    with open(dat, "w") as f:
        f.write("\n".join(rows) + "\n")
    title = cr.title.replace('"', "'")
    if cr.kind == "idle":
        script = """
set terminal pngcairo size 900,420 noenhanced font ",10"
set output "{png}"
set title "{title}: user-space RSS per idle connection (bytes, lower is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set yrange [0:*]
set grid ytics
set xtics rotate by -20
set key top left
plot "{dat}" using 2:xtic(1) title "never used" lc rgb "#4477aa", \\
     "" using 3 title "after one echo" lc rgb "#cc6677"
""".format(png=png, title=title, dat=dat)
    else:
        script = """
set terminal pngcairo size 1100,420 noenhanced font ",10"
set output "{png}"
set multiplot layout 1,2 title "{title} (median of rounds, bars = min-max)"
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.8 border -1
set yrange [0:*]
set grid ytics
set xtics rotate by -25
set title "{unit} (higher is better)"
plot "{dat}" using 2:3:4:xtic(1) notitle lc rgb "#4477aa"
set title "server CPU µs per {per} (lower is better)"
plot "{dat}" using 5:6:7:xtic(1) notitle lc rgb "#cc6677"
unset multiplot
""".format(png=png, title=title, dat=dat, unit=cr.unit, per=cr.per)
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if r.returncode != 0:
        script = script.replace("pngcairo", "png")
        r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    os.unlink(dat)
    return r.returncode == 0 and os.path.exists(png)


def machine_info(cfg):
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            info["cpu"] = m.group(1).strip() if m else "unknown"
    except OSError:
        info["cpu"] = "unknown"
    info["cores"] = str(os.cpu_count())
    info["kernel"] = os.uname().release
    cxx = "c++"
    try:
        with open(os.path.join(cfg.build_dir, "CMakeCache.txt")) as f:
            m = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.*)$", f.read(), re.M)
            if m:
                cxx = m.group(1)
    except OSError:
        pass
    r = subprocess.run([cxx, "--version"], capture_output=True, text=True)
    info["compiler"] = r.stdout.splitlines()[0] if r.returncode == 0 else cxx
    vers = []
    for pc, name in (("libevent_core", "libevent"), ("libuv", "libuv")):
        r = subprocess.run(["pkg-config", "--modversion", pc], capture_output=True, text=True)
        if r.returncode == 0:
            vers.append("%s %s" % (name, r.stdout.strip()))
    for pkg, name in (("libev-dev", "libev"), ("libasio-dev", "Asio"), ("nginx-light", "nginx"),
                      ("wrk", "wrk"), ("linux-perf", "perf"), ("valgrind", "valgrind")):
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                           text=True)
        if r.returncode == 0 and r.stdout:
            vers.append("%s %s" % (name, r.stdout.strip()))
    info["libraries"] = ", ".join(vers)
    r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                       text=True)
    commit = r.stdout.strip() or "unknown"
    d = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                       capture_output=True, text=True)
    info["evnet"] = commit + (" (+ uncommitted changes)" if d.stdout.strip() else "")
    r = subprocess.run(["cat", "/proc/loadavg"], capture_output=True, text=True)
    info["load average at start"] = " ".join(r.stdout.split()[:3])
    return info


# --------------------------------------------------------------------------------------------
# Main


def build_servers(cfg):
    b = cfg.build_dir
    peer = lambda n: os.path.join(b, "bench/peers", n)
    ex = lambda n: os.path.join(b, "examples", n)
    have_echo_server = os.access(ex("echo_server"), os.X_OK)
    echo = [Server("raw", "raw epoll", peer("raw_epoll_echo"), [], "echo", "raw")]
    if have_echo_server:
        echo.append(Server("evnet", "evnet echo_server", ex("echo_server"), ["--loops", "1"],
                           "echo", "evnet"))
    if not have_echo_server or cfg.full or cfg.all_layers:
        # Until echo_server exists, poll_echo (written directly on the poller) is evnet's row.
        echo.append(Server("poll_echo", "evnet poll_echo (poller layer)", ex("poll_echo"), [],
                           "echo", "evnet" if not have_echo_server else "evnet-layer"))
    if cfg.full or cfg.all_layers:
        echo.append(Server("event_echo", "evnet event_echo (event layer)", ex("event_echo"),
                           [], "echo", "evnet-layer"))
    if have_echo_server and (cfg.full or cfg.all_layers):
        # The same echo_server on the io_uring poller (IORING_OP_POLL_ADD readiness; the reads
        # and writes stay system calls): measures the choice of epoll as the default. An
        # explicit EVNET_POLLER fails to start where io_uring is unavailable, never falls back.
        echo.append(Server("evnet_uring", "evnet echo_server, io_uring poller",
                           ex("echo_server"), ["--loops", "1"], "echo", "evnet-layer",
                           env={"EVNET_POLLER": "io_uring"}))
    echo += [
        Server("libevent", "libevent (bufferevent)", peer("libevent_echo"), [], "echo", "lib"),
        Server("libuv", "libuv", peer("libuv_echo"), [], "echo", "lib"),
        Server("asio", "Asio (standalone)", peer("asio_echo"), [], "echo", "lib"),
        Server("libev", "libev", peer("libev_echo"), [], "echo", "lib"),
    ]
    http = [
        Server("rawhttp", "raw epoll responder", peer("raw_epoll_http"), [], "http", "raw"),
        # A reference row, judged by no goal (its family is its own): raw_epoll_http's answers
        # from a completion-based io_uring loop with almost no system calls left, i.e. how low
        # any design's CPU per request gets on this machine. It exits with status 3 where the
        # kernel refuses io_uring, which skips its rows with the reason it printed.
        Server("rawuring", "raw io_uring responder (completion)", peer("raw_uring_http"), [],
               "http", "reference", unavailable_status=3),
        Server("evnet_http", "evnet http_server", ex("http_server"), ["--loops", "1"], "http",
               "evnet"),
        Server("nginx", "nginx (1 worker)", "nginx", [], "nginx", "nginx"),
    ]
    ws = [
        Server("raw", "raw epoll TCP echo (reference)", peer("raw_epoll_echo"), [], "echo",
               "raw"),
        Server("evnet_ws", "evnet ws_echo_server", ex("ws_echo_server"), ["--loops", "1"], "ws",
               "evnet"),
    ]
    return echo, http, ws


def interleaved(cfg, cr, servers, one_run):
    """Runs each available server once per round, rotating the order every round."""
    avail = []
    for srv in servers:
        if srv.available():
            avail.append(srv)
        else:
            cr.skipped.append((srv.label, srv.skip_reason()))
    samples = {s.key: [] for s in avail}
    counts = {s.key: [] for s in avail}
    errors = {}
    # The counting runs, spread evenly over the case's rounds (the first and the last included).
    n = min(cfg.count_rounds, cfg.rounds)
    count_at = {0} if n <= 1 else {round(i * (cfg.rounds - 1) / (n - 1)) for i in range(n)}
    for r in range(cfg.rounds):
        order = avail[r % len(avail):] + avail[:r % len(avail)] if avail else []
        for srv in order:
            if srv.key in errors:
                continue
            s, err = one_run(srv, False)
            if not err and s.get("msgs", 1) == 0:
                # Neither process got the CPU for the whole window (other jobs on a shared
                # machine): the round measured the machine, not the server. Run it again once.
                cfg.notes.append("%s (%s): a round with no completed message (a scheduling "
                                 "stall covering the whole window) was run again" % (
                                     srv.label, cr.title))
                s, err = one_run(srv, False)
            if s and not err:
                cfg.samples_log.append([cr.key, srv.label, r + 1] + [
                    s.get(k, "") for k in SAMPLE_KEYS])
            if isinstance(err, SkipReason):
                errors[srv.key] = err
                log("bench:   %s: skipped: %s" % (srv.label, err))
            elif err:
                errors[srv.key] = err
                log("bench:   %s: FAILED: %s" % (srv.label, err))
            else:
                samples[srv.key].append(s)
        # System calls are counted in runs of their own (the tracepoint costs time, which must
        # not slow a timed run), taking turns like the timed ones. How well epoll_wait is
        # amortised depends on how the server and the load generator happen to interleave,
        # which changes from run to run (0.065 and 0.125 waits per message for the same server
        # in two consecutive runs), so one counting run per round and the median, not a single
        # run, ranks the servers.
        if cfg.syscall_tool and r in count_at:
            for srv in order:
                if srv.key in errors:
                    continue
                s, err = one_run(srv, True)
                if err:
                    cfg.notes.append("%s (%s): syscall-counting run failed: %s" % (
                        srv.label, cr.title, err))
                elif s.get("syscalls_per_msg") is not None:
                    counts[srv.key].append(s)
    counting = {}
    for key, runs in counts.items():
        if runs:
            merged = Sample()
            for k in ("syscalls_per_msg", "waits_per_msg", "ctl_per_msg"):
                vals = [x[k] for x in runs if x.get(k) is not None]
                if vals:
                    merged[k] = statistics.median(vals)
            counting[key] = merged
    for srv in avail:
        if isinstance(errors.get(srv.key), SkipReason):
            cr.skipped.append((srv.label, str(errors[srv.key])))
            continue
        cr.rows.append((srv, samples[srv.key], counting.get(srv.key), errors.get(srv.key)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="~2 minutes, 3 rounds (default)")
    g.add_argument("--full", action="store_true", help="5 rounds, longer windows, callgrind")
    ap.add_argument("--callgrind", action="store_true",
                    help="also measure user-space instructions per message (valgrind)")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--cases", default="", help="comma-separated subset of case keys")
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--all-layers", action="store_true",
                    help="add evnet's poll_echo and event_echo rows in --quick too")
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--results-dir", default=os.path.join(ROOT, "bench/results"))
    ap.add_argument("--list-cases", action="store_true")
    args = ap.parse_args()

    class Cfg:
        pass

    cfg = Cfg()
    cfg.full = args.full
    cfg.all_layers = args.all_layers
    cfg.build_dir = os.path.abspath(args.build_dir)
    # --full: many short rounds rather than a few long ones. This machine switches between a
    # fast and a slow state every ten seconds or so (a server's rounds fall into two clusters
    # up to 2× apart), so a median of 5 rounds is decided by which state each server's rounds
    # happened to meet; 9 rounds of 1 s sample those states more evenly for the same time.
    cfg.rounds = args.rounds or (9 if args.full else 3)
    cfg.window = 1.0 if args.full else 0.4
    cfg.warmup = 0.3 if args.full else 0.15
    cfg.count_window = 0.6 if args.full else 0.3
    # Counting runs per server (median): 5 with --full, so the counting costs no more time
    # than before the rounds were shortened.
    cfg.count_rounds = min(cfg.rounds, 5) if args.full else 1
    cfg.wrk_secs = 2 if args.full else 1
    cfg.count_wrk_secs = 1
    cfg.idle_conns = 10000
    cfg.callgrind = (args.full or args.callgrind) and not args.no_callgrind
    cfg.loadgen = os.path.join(cfg.build_dir, "bench/loadgen/echo_loadgen")
    cfg.notes = []
    cfg.http_checked = set()
    cfg.verification_failed = False
    cfg.samples_log = []

    cases = [
        dict(key="echo-64-50", title="echo ping-pong 64 B × 50 conns", kind="echo", size=64,
             conns=50),
        dict(key="echo-64-1000", title="echo ping-pong 64 B × 1,000 conns", kind="echo",
             size=64, conns=1000),
        dict(key="echo-4k-50", title="echo ping-pong 4 KiB × 50 conns", kind="echo", size=4096,
             conns=50),
        dict(key="echo-4k-1000", title="echo ping-pong 4 KiB × 1,000 conns", kind="echo",
             size=4096, conns=1000),
        dict(key="echo-pipe16-64", title="echo pipelined depth 16, 64 B × 50 conns",
             kind="echo", size=64, conns=50, depth=16),
        dict(key="http", title="HTTP plaintext, wrk 100 conns", kind="http", conns=100),
        dict(key="http-pipe16", title="HTTP plaintext pipelined ×16, wrk 100 conns",
             kind="http", conns=100, pipeline=16),
        dict(key="ws-64-50", title="WebSocket echo 64 B × 50 conns", kind="ws", size=64,
             conns=50),
        dict(key="ws-4k-50", title="WebSocket echo 4 KiB × 50 conns", kind="ws", size=4096,
             conns=50),
        dict(key="ws-64-1000", title="WebSocket echo 64 B × 1,000 conns", kind="ws",
             size=64, conns=1000),
        dict(key="ws-4k-1000", title="WebSocket echo 4 KiB × 1,000 conns", kind="ws",
             size=4096, conns=1000),
    ]
    cases += [
        dict(key="idle", title="idle connections: memory", kind="idle", conns=10000),
        dict(key="loops", title="evnet echo_server --loops 2 vs 1 (64 B × 1,000 conns)",
             kind="loops", size=64, conns=1000),
    ]
    if args.list_cases:
        for c in cases:
            print("%-16s %s" % (c["key"], c["title"]))
        return 0
    if args.cases:
        want = set(args.cases.split(","))
        unknown = want - {c["key"] for c in cases}
        if unknown:
            log("bench: unknown case(s) %s (see --list-cases)" % ", ".join(sorted(unknown)))
            return 2
        cases = [c for c in cases if c["key"] in want]

    if not os.access(cfg.loadgen, os.X_OK):
        log("bench: %s is missing: build the release preset first" % cfg.loadgen)
        return 2
    if (os.cpu_count() or 1) < 2:
        log("bench: fewer than 2 CPUs: load and server share a core; figures will say so")
    raise_nofile()
    forced = os.environ.get("EVNET_BENCH_SYSCALLS", "")  # "strace" tests the fallback path
    if forced == "strace" and shutil.which("strace"):
        cfg.syscall_tool = "strace"
    else:
        cfg.syscall_tool = "perf" if perf_works() else (
            "strace" if shutil.which("strace") else None)
    if cfg.syscall_tool != "perf":
        cfg.notes.append("perf (raw_syscalls tracepoints) not used: system calls are "
                         "counted with %s over the whole load run (slower; includes connection "
                         "set-up)" % (cfg.syscall_tool or "nothing"))
    cfg.tmp = tempfile.mkdtemp(prefix="evnet-bench-")
    echo_servers, http_servers, ws_servers = build_servers(cfg)
    info = machine_info(cfg)
    started = time.time()
    results = []
    try:
        for i, case in enumerate(cases, 1):
            t0 = time.time()
            log("bench: [%d/%d] %s …" % (i, len(cases), case["title"]))
            kind = case["kind"]
            cr = CaseResult(case["key"], case["title"], kind)
            cr.per = "req" if kind == "http" else "msg"
            cr.unit = "req/s" if kind == "http" else "msgs/s"
            cr.conns = case.get("conns")
            add_case_helpers(cr)
            if kind == "echo":
                interleaved(cfg, cr, echo_servers,
                            lambda srv, cnt, c=case: echo_run(cfg, srv, c, cnt))
                if cfg.callgrind and case["key"] == "echo-64-50":
                    callgrind_case(cfg, cr, case)
            elif kind == "ws":
                interleaved(cfg, cr, ws_servers,
                            lambda srv, cnt, c=case: echo_run(cfg, srv, c, cnt))
                if cfg.callgrind and case["key"] == "ws-64-50":
                    callgrind_case(cfg, cr, case)
            elif kind == "http":
                interleaved(cfg, cr, http_servers,
                            lambda srv, cnt, c=case: wrk_run(cfg, srv, c, cnt))
                if cfg.callgrind and case["key"] == "http-pipe16":
                    callgrind_case(cfg, cr, case)
            elif kind == "idle":
                for srv in echo_servers:
                    if not srv.available():
                        cr.skipped.append((srv.label, srv.skip_reason()))
                        continue
                    s, err = idle_run(cfg, srv, case["conns"])
                    cr.rows.append((srv, [s] if s else [], None, err))
            elif kind == "loops":
                evnet = next((s for s in echo_servers if s.key == "evnet"), None)
                if evnet is None or not evnet.available():
                    cr.skipped.append(("evnet echo_server", "not built yet"))
                else:
                    v1 = Server("evnet1", "evnet --loops 1", evnet.path, ["--loops", "1"],
                                "echo", "evnet")
                    v2 = Server("evnet2", "evnet --loops 2", evnet.path, ["--loops", "2"],
                                "echo", "evnet-2")
                    # Both variants may use both cores here (the load generator is pinned to
                    # CPU 0), so the comparison shows what a second loop buys when one core is
                    # already busy with the load: on 2 cores, overhead more than scaling.
                    interleaved(cfg, cr, [v1, v2], lambda srv, cnt, c=case: echo_run(
                        cfg, srv, c, cnt, cpus="0,1"))
            results.append(cr)
            log("bench: [%d/%d] %s done in %.0f s" % (i, len(cases), case["title"],
                                                      time.time() - t0))
    finally:
        kill_all()
    elapsed = time.time() - started
    write_results(cfg, args, results, info, elapsed)
    shutil.rmtree(cfg.tmp, ignore_errors=True)
    return 1 if cfg.verification_failed else 0


def callgrind_case(cfg, cr, case):
    """Instructions per message from two callgrind runs of different lengths (the difference
    cancels start-up, connection set-up and shutdown)."""
    if case["kind"] == "http":
        # wrk runs for a time, not a number of requests: two lengths, subtracted the same way.
        run_one, (m1, m2) = callgrind_wrk_run, ((1, 3) if not cfg.full else (2, 6))
        log("bench:   callgrind: wrk for %d s and %d s per server …" % (m1, m2))
    else:
        run_one, (m1, m2) = callgrind_run, ((5000, 25000) if not cfg.full else (10000, 50000))
        log("bench:   callgrind: %d and %d messages per server …" % (m1, m2))
    for srv, samples, _, err in cr.rows:
        if err:
            continue
        a, e1 = run_one(cfg, srv, case, m1)
        b, e2 = (None, None) if e1 else run_one(cfg, srv, case, m2)
        if e1 or e2:
            cfg.notes.append("%s: callgrind failed: %s" % (srv.label, e1 or e2))
            continue
        if b[1] > a[1]:
            cr.instr[srv.key] = (b[0] - a[0]) / float(b[1] - a[1])
        if b[1] > 0 and case["kind"] != "http":  # a timed run's start-up share is arbitrary
            cr.instr_total[srv.key] = (b[0] / float(b[1]), b[1])
        if case["kind"] == "echo":
            # Over one connection every poll round carries exactly one message, so this figure
            # does not depend on how the load happened to batch (the figure above does a
            # little): it is the per-round cost plus the per-message cost.
            one = dict(case, conns=1)
            a, e1 = callgrind_run(cfg, srv, one, m1)
            b, e2 = callgrind_run(cfg, srv, one, m2)
            if e1 or e2:
                cfg.notes.append("%s: callgrind (1 conn) failed: %s" % (srv.label, e1 or e2))
            elif b[1] > a[1]:
                cr.instr1[srv.key] = (b[0] - a[0]) / float(b[1] - a[1])


def goal_lines(results):
    """The goals of issues 4, 5 and 6, checked against this run ("met" means met in this run;
    throughput and CPU goals on a shared machine can flip between runs, the others rarely)."""
    out = []

    def row(cr, family):
        for srv, samples, counting, err in cr.rows:
            if srv.family == family and not err and samples:
                return srv, samples, counting
        return None

    def v(cr, family, key):
        r = row(cr, family)
        if not r:
            return None
        if key == "syscalls_per_msg":
            return r[2].get(key) if r[2] else None
        if key == "instr":
            return cr.instr.get(r[0].key)
        if key == "bytes_per_conn":
            return r[1][0].get(key)
        return summarize(r[1], key)[0]

    def check(name, ok, detail):
        if ok is None:
            out.append("- %s: not measured (%s)" % (name, detail))
        else:
            out.append("- %s: **%s** (%s)" % (name, "met" if ok else "NOT met", detail))

    def per_round(cr, fam_a, fam_b, key):
        """a ÷ b within each round: the two servers ran seconds apart, so the pairing cancels
        the drift between rounds (the spread of these ratios says how close a verdict is to the
        noise). Rows with a failed round drop out of the pairing."""
        ra = [r for r in cr.rows if r[0].family == fam_a and not r[3] and r[1]]
        rb = [r for r in cr.rows if (r[0].family == fam_b or r[0].key == fam_b) and not r[3]
              and r[1]]
        if not ra or not rb or len(ra[0][1]) != len(rb[0][1]):
            return []
        return [x[key] / y[key] for x, y in zip(ra[0][1], rb[0][1])
                if key in x and key in y and y[key]]

    def ratio_goal(name, a, b, op, limit, fmt="%.3f×", rounds=None):
        """With per-round ratios (3 rounds or more), the verdict is their median: the two
        servers of a pair ran within one round, so the machine's drift, which the rounds do not
        share, cancels out of it; the ratio of the two medians, whose rounds met different
        states of the machine, is shown beside it."""
        if a is None or b is None or not b:
            check(name, None, "a row is missing or its figure was not measured")
            return

        def meets(x):
            return x >= limit if op == ">=" else x <= limit

        r = a / b
        if rounds and len(rounds) >= 3:
            pm = statistics.median(rounds)
            ok = sum(1 for x in rounds if meets(x))
            detail = ("median of the per-round ratios %s %s %s (%d of %d rounds meet it, "
                      "%.2f–%.2f×); ratio of the medians %s" % (
                          fmt % pm, op, fmt % limit, ok, len(rounds), min(rounds), max(rounds),
                          fmt % r))
            check(name, meets(pm), detail)
            return
        check(name, meets(r), (fmt % r) + " " + op + " " + (fmt % limit))

    for cr in results:
        if cr.kind == "echo" and row(cr, "evnet"):
            t = cr.title
            ratio_goal(t + ": throughput vs raw epoll", v(cr, "evnet", "msgs_per_s"),
                       v(cr, "raw", "msgs_per_s"), ">=", 0.95,
                       rounds=per_round(cr, "evnet", "raw", "msgs_per_s"))
            lib = [r for r in cr.rows if r[0].key == "libevent" and not r[3]]
            ratio_goal(t + ": throughput vs libevent", v(cr, "evnet", "msgs_per_s"),
                       summarize(lib[0][1], "msgs_per_s")[0] if lib else None, ">=", 1.3,
                       rounds=per_round(cr, "evnet", "libevent", "msgs_per_s"))
            ratio_goal(t + ": CPU/msg vs raw epoll", v(cr, "evnet", "cpu_ns_per_msg"),
                       v(cr, "raw", "cpu_ns_per_msg"), "<=", 1.05,
                       rounds=per_round(cr, "evnet", "raw", "cpu_ns_per_msg"))
            libs = [(r[0].label, summarize(r[1], "cpu_ns_per_msg")[0]) for r in cr.rows
                    if r[0].family == "lib" and not r[3] and r[1]]
            ev = v(cr, "evnet", "cpu_ns_per_msg")
            unmeasured = ([] if ev is not None else ["evnet"]) + [
                label for label, c in libs if c is None]
            if libs and unmeasured:
                check(t + ": CPU/msg lowest of libevent/libuv/Asio/libev", None,
                      "server CPU time not measured for " + ", ".join(unmeasured))
            elif libs:
                # Against each library, paired within the rounds as above: below every one.
                best = min(c for _, c in libs)
                paired = []
                for r in cr.rows:
                    if r[0].family == "lib" and not r[3] and r[1]:
                        pr = per_round(cr, "evnet", r[0].key, "cpu_ns_per_msg")
                        if len(pr) >= 3:
                            paired.append((statistics.median(pr), r[0].label))
                detail = "medians: evnet %.2f µs, best library %.2f µs" % (ev / 1e3, best / 1e3)
                if len(paired) == len(libs):
                    worst = max(paired)
                    detail = ("evnet ÷ each library, median of the per-round ratios: %s; %s" % (
                        ", ".join("%s %.3f×" % (lb, x) for x, lb in paired), detail))
                    check(t + ": CPU/msg lowest of libevent/libuv/Asio/libev", worst[0] < 1.0,
                          detail)
                else:
                    check(t + ": CPU/msg lowest of libevent/libuv/Asio/libev", ev < best, detail)
            if cr.instr:
                ratio_goal(t + ": instructions/msg ≤ 2× raw epoll's (the brief's bar)",
                           v(cr, "evnet", "instr"), v(cr, "raw", "instr"), "<=", 2.0)
            ev_row, raw_row = row(cr, "evnet"), row(cr, "raw")
            if cr.instr_total:
                a = cr.instr_total.get(ev_row[0].key) if ev_row else None
                b = cr.instr_total.get(raw_row[0].key) if raw_row else None
                ratio_goal(t + ": total instructions ÷ messages (start-up included, %s msgs: the "
                           "brief's method) ≤ 2× raw epoll's" % fmt_num(a[1] if a else None),
                           a[0] if a else None, b[0] if b else None, "<=", 2.0)
            if cr.instr1:
                ratio_goal(t + ": instructions/msg over 1 conn ≤ 2× raw epoll's",
                           cr.instr1.get(ev_row[0].key) if ev_row else None,
                           cr.instr1.get(raw_row[0].key) if raw_row else None, "<=", 2.0)
            a, b = v(cr, "evnet", "syscalls_per_msg"), v(cr, "raw", "syscalls_per_msg")
            if a is not None and b is not None:
                # Counts are exact but runs differ by a few epoll_waits: allow 0.02.
                check(t + ": syscalls/msg ≤ raw epoll's", a <= b + 0.02,
                      "%.3f vs %.3f, 0.02 allowed" % (a, b))
        elif cr.kind == "http" and row(cr, "evnet"):
            t = cr.title
            if "pipelined" in t:
                ratio_goal(t + ": req/s vs raw responder", v(cr, "evnet", "msgs_per_s"),
                           v(cr, "raw", "msgs_per_s"), ">=", 0.95,
                           rounds=per_round(cr, "evnet", "raw", "msgs_per_s"))
            else:
                ratio_goal(t + ": req/s vs nginx", v(cr, "evnet", "msgs_per_s"),
                           v(cr, "nginx", "msgs_per_s"), ">=", 1.0,
                           rounds=per_round(cr, "evnet", "nginx", "msgs_per_s"))
            ratio_goal(t + ": CPU/req vs nginx", v(cr, "evnet", "cpu_ns_per_msg"),
                       v(cr, "nginx", "cpu_ns_per_msg"), "<=", 0.8,
                       rounds=per_round(cr, "evnet", "nginx", "cpu_ns_per_msg"))
            ratio_goal(t + ": CPU/req vs raw responder", v(cr, "evnet", "cpu_ns_per_msg"),
                       v(cr, "raw", "cpu_ns_per_msg"), "<=", 1.1,
                       rounds=per_round(cr, "evnet", "raw", "cpu_ns_per_msg"))
        elif cr.kind == "ws" and row(cr, "evnet"):
            t = cr.title
            ratio_goal(t + ": throughput vs raw TCP echo", v(cr, "evnet", "msgs_per_s"),
                       v(cr, "raw", "msgs_per_s"), ">=", 0.9,
                       rounds=per_round(cr, "evnet", "raw", "msgs_per_s"))
            a = v(cr, "evnet", "syscalls_per_msg")
            check(t + ": ≤ 2.1 syscalls/msg", None if a is None else a <= 2.1,
                  "no count" if a is None else "%.3f" % a)
            if "64 B" in t and cr.instr:
                a = v(cr, "evnet", "instr")
                check(t + ": ≤ 700 instructions/msg", None if a is None else a <= 700,
                      "no count" if a is None else "%.0f" % a)
        elif cr.kind == "idle" and row(cr, "evnet"):
            for key, what in (("bytes_per_conn_unused", "never used"),
                              ("bytes_per_conn", "after one echo")):
                r = row(cr, "evnet")
                ev = r[1][0].get(key) if r else None
                others = [x[1][0][key] for x in cr.rows
                          if x[0].family not in ("evnet", "evnet-layer") and not x[3] and x[1]]
                if ev is not None and others:
                    check("idle (%s): lowest memory per connection of all peers" % what,
                          ev <= min(others), "evnet %.0f B, lowest peer %.0f B" % (ev,
                                                                                  min(others)))
                if ev is not None:
                    check("idle (%s): ≤ 2 KiB user-space RSS per connection" % what, ev <= 2048,
                          "%.0f B" % ev)
    return out


def write_results(cfg, args, results, info, elapsed):
    os.makedirs(args.results_dir, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    stamp = datetime.datetime.now().strftime("%Y-%m-%d")
    base = os.path.join(args.results_dir, "%s-%s" % (stamp, host))
    # A second run on the same day gets its own name (-2, -3, ...): results already stored,
    # and cited by notes and commits, are never overwritten.
    n = 2
    while os.path.exists(base + ".md"):
        base = os.path.join(args.results_dir, "%s-%s-%d" % (stamp, host, n))
        n += 1
    mode = "--full" if cfg.full else "--quick"
    md = ["# evnet benchmark: %s, %s" % (stamp, host), ""]
    md.append("`scripts/bench %s` — %d interleaved rounds per case, server pinned to CPU %s, "
              "load on CPU %s; medians with the min–max spread; load windows of %.1f s after "
              "%.1f s warm-up (wrk: %d s); took %.0f s." % (
                  mode, cfg.rounds, SERVER_CPU, LOAD_CPU, cfg.window, cfg.warmup, cfg.wrk_secs,
                  elapsed))
    md.append("")
    md.append("Every round's figures: `%s-rounds.csv`; the medians: `%s.csv`." % (
        os.path.basename(base), os.path.basename(base)))
    md.append("")
    with open("/proc/loadavg") as f:
        info["load average at end"] = " ".join(f.read().split()[:3])
    md.append("%s (see the load averages below). Two shared cores drift by tens of percent "
              "from minute to minute (in jumps between a fast and a slow state), so absolute "
              "throughput and CPU time drift between rounds: compare servers through the ratios "
              "from this one interleaved run (the goals below pair them within each round), "
              "and rank them by the costs that do not drift — system calls and instructions "
              "per message." %
              busy_note(info))
    md.append("")
    for k, v in info.items():
        md.append("- **%s**: %s" % (k, v))
    md.append("- **system calls counted with**: %s, in counting runs of their own (%.1f s "
              "windows): %s" % (
                  cfg.syscall_tool or "nothing available", cfg.count_window,
                  "one per server, in the first round" if cfg.count_rounds == 1 else
                  "one per server in %d of the %d rounds, spread over the case; the tables "
                  "show the median" % (min(cfg.count_rounds, cfg.rounds), cfg.rounds)))
    md.append("")
    csv_rows = []
    for cr in results:
        with_instr = bool(cr.instr)
        md.append("## %s" % cr.title)
        md.append("")
        md.append(case_table(cr, with_instr))
        png = "%s-%s.png" % (base, cr.key)
        if plot_case(cfg, cr, png):
            md.append("")
            md.append("![%s](%s)" % (cr.title, os.path.basename(png)))
        md.append("")
        for srv, samples, counting, err in cr.rows:
            if cr.kind == "idle":
                s = samples[0] if samples else {}
                csv_rows.append([cr.key, srv.label, "FAILED: " + err if err else "ok",
                                 "", "", "", "", "", "", "", "",
                                 "%s/%s" % (s.get("bytes_per_conn_unused", ""),
                                            s.get("bytes_per_conn", ""))])
                continue
            rate, lo, hi = summarize(samples, "msgs_per_s")
            cpu, _, _ = summarize(samples, "cpu_ns_per_msg")
            p50, _, _ = summarize(samples, "p50_us")
            p99, _, _ = summarize(samples, "p99_us")
            csv_rows.append([cr.key, srv.label, "FAILED: " + err if err else "ok", len(samples),
                             rate, lo, hi, p50, p99, cpu,
                             counting.get("syscalls_per_msg", "") if counting else "",
                             cr.instr.get(srv.key, "")])
        for label, why in cr.skipped:
            csv_rows.append([cr.key, label, "skipped: " + why] + [""] * 9)
    goals = goal_lines(results)
    if goals:
        md.append("## Goals, checked against this run")
        md.append("")
        md += goals
        md.append("")
    if cfg.notes:
        md.append("## Notes from this run")
        md.append("")
        for n in cfg.notes:
            md.append("- " + n)
        md.append("")
    text = "\n".join(md)
    with open(base + ".md", "w") as f:
        f.write(text)
    with open(base + ".csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["# " + "; ".join("%s=%s" % kv for kv in info.items())])
        w.writerow(["case", "server", "status", "rounds", "rate_median", "rate_min", "rate_max",
                    "p50_us", "p99_us", "server_cpu_ns_per_msg", "syscalls_per_msg",
                    "instructions_per_msg_or_idle_bytes_per_conn_unused/after_echo"])
        w.writerows(csv_rows)
    with open(base + "-rounds.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "server", "round"] + SAMPLE_KEYS)
        w.writerows(cfg.samples_log)
    write_latest(cfg, args, results, info, base, stamp, host, mode)
    print(text)
    log("bench: results in %s.md, .csv, -rounds.csv and .png charts; README snippet in %s" % (
        os.path.relpath(base, ROOT), os.path.relpath(os.path.join(args.results_dir,
                                                                 "latest.md"), ROOT)))


def write_latest(cfg, args, results, info, base, stamp, host, mode):
    """The snippet for the top-level README's Performance section."""
    out = ["<!-- generated by scripts/bench from %s.md; do not edit by hand -->" %
           os.path.basename(base), ""]
    out.append("Measured by `scripts/bench %s` on %s (%s cores, %s, kernel %s), %s, evnet %s. "
               "Servers take turns within each case (%d interleaved rounds, medians, spread "
               "min–max); each server runs on CPU %s with the load generator on CPU %s. %s "
               "(load average %s at the start, %s at the end); on this kind of shared machine "
               "absolute rates and CPU times drift from round to round anyway: read the ratios, and rank "
               "servers by **system calls** and **instructions per message**, which do not "
               "drift, and by **CPU time** compared within a round (the goal lines). (On an idle two-core machine the one-thread "
               "load generator saturates its core at about a raw-epoll server's speed, which "
               "hides the differences between good servers in throughput alone.) Reproduce with "
               "`scripts/bench` (about 3 minutes) or `scripts/bench --full`. Full tables, every "
               "round's figures and the goals: [`bench/results/%s.md`](bench/results/%s.md)." % (
                   mode, host, info["cores"], info["cpu"], info["kernel"], stamp, info["evnet"],
                   cfg.rounds, SERVER_CPU, LOAD_CPU, busy_note(info),
                   info.get("load average at start", "?"),
                   info.get("load average at end", "?"), os.path.basename(base),
                   os.path.basename(base)))
    out.append("")
    for cr in results:
        if cr.kind not in ("echo", "http", "ws", "idle"):
            continue
        out.append("**%s**" % cr.title)
        out.append("")
        out.append(case_table(cr, bool(cr.instr)))
        out.append("")
        png = "%s-%s.png" % (base, cr.key)
        if os.path.exists(png) and cr.key in ("echo-64-50", "http-pipe16", "idle"):
            out.append("![%s](bench/results/%s)" % (cr.title, os.path.basename(png)))
            out.append("")
    goals = goal_lines(results)
    if goals:
        out.append("Goals (from the issues), checked against this run:")
        out.append("")
        out += goals
        out.append("")
    with open(os.path.join(args.results_dir, "latest.md"), "w") as f:
        f.write("\n".join(out))
    update_readme("\n".join(out), args)


def busy_note(info):
    """Whether other work shared the machine, judged from the 1-minute load average."""
    try:
        load = float(str(info.get("load average at start", "")).split()[0])
    except (ValueError, IndexError):
        return "The machine's load during the run is unknown"
    if load > 1.5:
        return "Other work shared the machine during the run"
    return "The machine had no other significant work during the run"


README_BEGIN = "<!-- PERFORMANCE:BEGIN (scripts/bench writes this section) -->"
README_END = "<!-- PERFORMANCE:END -->"


def update_readme(snippet, args):
    """Replaces the README's Performance section with this run's snippet, for runs that write
    to the repository's own results directory (not scratch runs)."""
    readme = os.path.join(ROOT, "README.md")
    if os.path.realpath(args.results_dir) != os.path.realpath(os.path.join(ROOT, "bench",
                                                                           "results")):
        return
    try:
        with open(readme) as f:
            text = f.read()
    except OSError:
        return
    b, e = text.find(README_BEGIN), text.find(README_END)
    if b < 0 or e < b:
        return
    text = text[:b + len(README_BEGIN)] + "\n" + snippet + "\n" + text[e:]
    with open(readme, "w") as f:
        f.write(text)
    log("bench: README.md Performance section updated")


if __name__ == "__main__":
    def _on_signal(signum, frame):
        kill_all()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        sys.exit(main())
    finally:
        kill_all()
