"""Whole-process measurement for the benchmarks: wall, CPU and peak RSS of a command
and every process it starts (Spark's JVM too), sampled from /proc every 20 ms, and for
the command itself also from its own rusage (`/usr/bin/time`, for short runs)."""
import os, subprocess, sys, tempfile, threading, time


def tree(root_pid):
    """{pid: (cpu ticks, rss pages)} of a process and all its descendants now."""
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            procs[int(d)] = (int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21]))
        except (OSError, IndexError, ValueError):
            pass
    out, todo = {}, [root_pid]
    while todo:
        p = todo.pop()
        if p in procs:
            out[p] = procs[p][1:]
            todo.extend(c for c, v in procs.items() if v[0] == p)
    return out


def measured(cmd, env=None, cwd=None, timeout=None):
    """(stdout, wall s, cpu s, peak RSS MiB) of `cmd`; None past `timeout` seconds (the
    process is killed). Exits with its output when it fails."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    rusage = tempfile.NamedTemporaryFile(prefix="bench-rusage-")
    err = tempfile.TemporaryFile()
    t = time.time()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M %U %S", "-o", rusage.name] + cmd,
                         stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()))
    reader.start()
    cpu_seen, peak = {}, 0
    while p.poll() is None:
        if timeout and time.time() - t > timeout:
            p.kill(); p.wait(); reader.join()
            return None
        now = tree(p.pid)
        for pid, (ticks, _) in now.items():
            cpu_seen[pid] = ticks
        peak = max(peak, sum(rss for _, rss in now.values()) * page)
        time.sleep(0.02)
    wall = time.time() - t
    reader.join()
    stdout = out[0].decode() if out else ""
    if p.returncode != 0:
        err.seek(0)
        sys.exit(f"{cmd[:3]} failed:\n{stdout[-3000:]}\n{err.read().decode()[-3000:]}")
    rss_kib, user, system = open(rusage.name).read().split()[-3:]
    cpu = max(sum(cpu_seen.values()) / tick, float(user) + float(system))
    rss = max(peak / 2**20, int(rss_kib) / 1024)
    return stdout, wall, cpu, rss


def timed(cmd, cwd=None, env=None, timeout=None):
    """(wall s, cpu/wall, peak RSS MiB, stdout) of the whole process tree, or None past
    `timeout` seconds."""
    r = measured(cmd, env=env, cwd=cwd, timeout=timeout)
    if r is None:
        return None
    out, wall, cpu, rss = r
    return wall, cpu / wall, rss, out
