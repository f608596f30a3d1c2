"""The sandbox's holder: the program that is PID 1 of its namespaces (see sandbox.py).

It runs as `python3 -I holder.py SPEC` under `unshare --mount --net --pid --fork
--mount-proc`, where SPEC is a JSON description of what to build (`Sandbox.start()` writes
this text to a file in the sandbox's directory). It builds the private /dev, the overlays,
/run and journald, reports READY on stdout, then waits for EOF on stdin (the parent closing
the pipe, or dying) and exits, which makes the kernel kill everything in the namespace.
It is kept as text, not imported: it runs in a fresh interpreter before any overlay exists.
"""

from __future__ import annotations

READY = b"sandbox-ready\n"

SCRIPT = r"""
import json, os, signal, subprocess, sys, time
spec = json.loads(sys.argv[1])

def sh(*argv):
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write("sandbox setup failed: %r exited %d: %s\n"
                         % (argv, r.returncode, r.stderr.strip()))
        sys.exit(1)

sh("mount", "--make-rprivate", "/")
sh("ip", "link", "set", "lo", "up")
# The sandbox's own directory is used before anything is mounted over the paths above it
# (it may lie under /var, /run or another directory that gets an overlay or a tmpfs): the
# private /dev is built first, and the overlay layers are named through a descriptor
# opened now (through an overlaid /var, their name would resolve into that overlay, which
# cannot hold another upper layer).
layers = os.open(spec["layers"], os.O_PATH | os.O_DIRECTORY)
if spec["dev"]:
    hostdev = spec["hostdev"]
    sh("mount", "--rbind", "/dev", hostdev)
    sh("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", "/dev")
    for n in ("null", "zero", "random", "urandom", "tty", "full", "ptmx", "kmsg"):
        if os.path.exists(os.path.join(hostdev, n)):
            open("/dev/" + n, "w").close()
            sh("mount", "--bind", os.path.join(hostdev, n), "/dev/" + n)
    os.makedirs("/dev/pts"); os.makedirs("/dev/shm")
    sh("mount", "--rbind", os.path.join(hostdev, "pts"), "/dev/pts")
    sh("mount", "-t", "tmpfs", "tmpfs", "/dev/shm")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("log", "/run/systemd/journal/dev-log")):
        os.symlink(target, "/dev/" + name)
    # The host's /dev stays reachable only through this private mount; hide it.
    sh("umount", "-l", hostdev)
for target, upper, work in spec["overlays"]:
    opts = "lowerdir=%s,upperdir=/proc/self/fd/%d/%s,workdir=/proc/self/fd/%d/%s" % (
        target, layers, upper, layers, work)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, target],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       pass_fds=(layers,))
    if r.returncode != 0:
        sys.stderr.write("sandbox setup failed: overlay on %s: %s\n"
                         % (target, r.stderr.strip()))
        sys.exit(1)
os.close(layers)
sh("mount", "-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run")
for d in ("/run/sshd", "/run/systemd/journal", "/run/log/journal",
          "/run/systemd/journald.conf.d"):
    os.makedirs(d, exist_ok=True)
os.chmod("/run/sshd", 0o755)
with open("/run/systemd/journald.conf.d/sandbox.conf", "w") as f:
    # Never write to the host's /var/log/journal; keep the sandbox's journal in /run.
    f.write("[Journal]\nStorage=volatile\nRateLimitBurst=0\nForwardToSyslog=no\n"
            "ForwardToWall=no\nForwardToConsole=no\nForwardToKMsg=no\n")
if spec["journald"]:
    subprocess.Popen([spec["journald_bin"]], stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=sys.stderr)
    deadline = time.monotonic() + 10
    sock = "/run/systemd/journal/socket"
    while not (os.path.exists(sock) and os.path.exists("/run/systemd/journal/dev-log")):
        if time.monotonic() > deadline:
            sys.stderr.write("sandbox setup failed: journald did not create its sockets\n")
            sys.exit(1)
        time.sleep(0.02)
# From here on the kernel reaps orphans re-parented to us (we are PID 1 of the namespace).
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
sys.stdout.buffer.write(b"sandbox-ready\n"); sys.stdout.flush()
sys.stdin.buffer.read()
"""
