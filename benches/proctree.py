"""Whole-process measurement for the benchmarks: wall, CPU and peak RSS of a command
and every process it starts (Spark's JVM too), sampled from /proc every 20 ms, and for
the command itself also from its own rusage (`/usr/bin/time`, for short runs)."""
import os, subprocess, sys, tempfile, threading, time


def processes():
    """{pid: (parent pid, cpu ticks, rss pages)} of every process now."""
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
    return procs


def tree(root_pid):
    """{pid: (cpu ticks, rss pages)} of a process and all its descendants now."""
    procs = processes()
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


def sampled(cmd, watch=None, env=None, cwd=None, timeout=None):
    """`cmd`'s process tree and, over the same run, the trees of already running pids
    (`watch`: {name: (root pids, count the roots too)}, e.g. Spark workers, whose
    executors are not the command's children), all from one /proc scan every 20 ms.
    Returns (stdout, stderr, wall s, {"cmd" and each name: (cpu s, peak RSS MiB, s to the
    first new process or None)}): cpu is what the tree used during the run (a watched
    root's ticks counted from the start), peak RSS the max over samples of the sum.
    None past `timeout` seconds (the command is killed); exits when the command fails."""
    import resource
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    groups = {"cmd": ([], True)}
    groups.update(watch or {})
    def scan():
        procs = processes()
        kids = {}
        for pid, (ppid, _, _) in procs.items():
            kids.setdefault(ppid, []).append(pid)
        return procs, kids
    def members(procs, kids, roots, own):
        out, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            if p in procs:
                out.add(p)
                todo.extend(kids.get(p, []))
        return out if own else out - set(roots)
    procs, kids = scan()
    base = {name: {p: procs[p][1] for p in members(procs, kids, roots, True)} for name, (roots, _) in groups.items()}
    err = tempfile.TemporaryFile()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = ru.ru_utime + ru.ru_stime
    t = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd)
    groups["cmd"] = ([p.pid], True)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()))
    reader.start()
    seen = {name: {} for name in groups}
    peak = {name: 0 for name in groups}
    first = {name: None for name in groups}
    while p.poll() is None:
        if timeout and time.time() - t > timeout:
            p.kill(); p.wait(); reader.join()
            return None
        procs, kids = scan()
        for name, (roots, own) in groups.items():
            now = members(procs, kids, roots, own)
            if first[name] is None and any(q not in base[name] for q in now - {p.pid}):
                first[name] = time.time() - t
            for q in now:
                seen[name][q] = procs[q][1]
            peak[name] = max(peak[name], sum(procs[q][2] for q in now) * page)
        time.sleep(0.02)
    wall = time.time() - t
    reader.join()
    stdout = out[0].decode() if out else ""
    err.seek(0)
    stderr = err.read().decode()
    if p.returncode != 0:
        sys.exit(f"{cmd[:3]} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    stats = {}
    for name in groups:
        cpu = sum(ticks - base[name].get(q, 0) for q, ticks in seen[name].items()) / tick
        if name == "cmd":  # the command's own rusage also counts its reaped children
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = max(cpu, ru.ru_utime + ru.ru_stime - cpu_before)
        stats[name] = (cpu, peak[name] / 2**20, first[name])
    return stdout, stderr, wall, stats
