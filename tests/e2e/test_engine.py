"""The engine through the real `devbox` command: run, exec, ps, logs, stop, kill, rm, limits, isolation."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import DEVBOX, cgroup_dirs_for, devbox, ok, pid_alive, wait_for

pytestmark = pytest.mark.root

# Docker's default capability set, as a mask (CapBnd/CapPrm/CapEff of a root process in a container)
DOCKER_DEFAULT_CAPS = 0x00000000A80425FB


@pytest.fixture
def names(busybox_image: str) -> Iterator[list[str]]:
    """Container names a test creates; all are removed at the end, even when the test fails."""
    made: list[str] = []
    yield made
    for n in made:
        devbox("rm", "-f", n)


def _status(text: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def test_run_echo_and_exit_codes(busybox_image: str) -> None:
    r = devbox("run", "--rm", "--network", "none", busybox_image, "echo", "hello", "world")
    assert (r.returncode, r.stdout) == (0, "hello world\n"), r.stderr
    r = devbox("run", "--rm", "--network", "none", busybox_image, "sh", "-c", "exit 7")
    assert r.returncode == 7
    # PID 1 of a pid namespace cannot be SIGKILLed from inside it: kill it from the host
    p = subprocess.Popen([DEVBOX, "run", "--rm", "--name", "victim", "--network", "none", busybox_image,
                          "sleep", "100"])  # fmt: skip
    try:
        pid = wait_for(lambda: next((c["pid"] for c in json.loads(ok("ps", "--json")) if c["name"] == "victim"), None),
                       what="victim to run")  # fmt: skip
        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert p.wait(10) == 137
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "victim" not in ok("ps", "-a")


def test_command_not_found_is_127_and_leaves_nothing(busybox_image: str) -> None:
    before = devbox("ps", "-a", "-q").stdout
    r = devbox("run", "--rm", "--network", "none", busybox_image, "no-such-cmd")
    assert r.returncode == 127
    assert r.stderr.count("\n") == 1 and "no-such-cmd" in r.stderr and "not found" in r.stderr
    assert devbox("ps", "-a", "-q").stdout == before


def test_isolation_probe(busybox_image: str) -> None:
    probe = r"""
echo "pid=$$"
echo "hostname=$(hostname)"
cat /proc/self/status
echo "fds=$(ls /proc/self/fd | tr '\n' ' ')"
echo "kcore=$( [ -e /proc/kcore ] && wc -c < /proc/kcore || echo 0)"
echo "keys=$(cat /proc/keys 2>&1 | wc -c)"
echo "timer_list=$(cat /proc/timer_list | wc -c)"
echo "acpi=$(ls -A /proc/acpi 2>/dev/null | wc -l)"
echo "firmware=$(ls -A /sys/firmware 2>/dev/null | wc -l)"
if echo 1 > /proc/sys/kernel/domainname 2>/dev/null; then echo procsys=rw; else echo procsys=ro; fi
if echo x > /proc/sysrq-trigger 2>/dev/null; then echo sysrq=rw; else echo sysrq=ro; fi
if touch /sys/x 2>/dev/null; then echo sys=rw; else echo sys=ro; fi
if mount -t tmpfs t /mnt 2>/dev/null; then echo mount=yes; else echo mount=no; fi
echo "ps=$(ps -o pid | tail -n +2 | tr -d ' ' | tr '\n' ' ')"
cat /proc/self/mounts
"""
    r = devbox("run", "--rm", "--network", "none", "--hostname", "probe", busybox_image, "sh", "-c", probe)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line and ":" not in line.split("=")[0])
    st = _status(out)
    assert kv["pid"] == "1"
    assert kv["hostname"] == "probe"
    for key in ("CapBnd", "CapPrm", "CapEff"):
        assert int(st[key], 16) == DOCKER_DEFAULT_CAPS, key
    assert int(st["CapInh"], 16) == 0 and int(st["CapAmb"], 16) == 0
    assert st["NoNewPrivs"].strip() == "1"
    # ls itself opens one directory fd (3); nothing else of devbox's leaked in
    assert kv["fds"].split() == ["0", "1", "2", "3"]
    assert kv["kcore"] == "0" and kv["timer_list"] == "0"
    assert kv["acpi"] == "0" and kv["firmware"] == "0"
    assert kv["procsys"] == "ro" and kv["sysrq"] == "ro" and kv["sys"] == "ro"
    assert kv["mount"] == "no"  # no CAP_SYS_ADMIN
    mounts = [line.split() for line in out.splitlines() if line.count(" ") >= 5 and line.split()[1].startswith("/")]
    by_target = {m[1]: m for m in mounts}
    assert by_target["/"][2] == "overlay"
    assert by_target["/proc"][2] == "proc"
    assert by_target["/dev"][2] == "tmpfs"
    assert by_target["/dev/pts"][2] == "devpts"
    assert by_target["/dev/shm"][2] == "tmpfs"
    assert by_target["/dev/mqueue"][2] == "mqueue"
    assert "ro" in by_target["/sys"][3].split(",")
    for f in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf"):
        assert f in by_target
    # nothing of the host's mount table leaks in
    assert not any(m[1].startswith("/work") or m[1].startswith("/var/lib") for m in mounts)


def test_host_sees_no_mount_of_the_container(busybox_image: str, names: list[str]) -> None:
    names.append("mnt-probe")
    ok("run", "-d", "--name", "mnt-probe", "--network", "none", busybox_image, "sleep", "1000")
    cid = json.loads(ok("ps", "--json"))
    cid = next(c["id"] for c in cid if c["name"] == "mnt-probe")
    with open("/proc/self/mountinfo") as f:
        assert cid not in f.read()


def test_detached_lifecycle_ps_exec_logs_stop_rm(busybox_image: str, names: list[str]) -> None:
    names.append("web")
    cid = ok("run", "-d", "--name", "web", "--network", "none", "-e", "GREETING=hi", busybox_image, "sh", "-c",
             'echo "started $GREETING"; trap "echo bye; exit 0" TERM; while :; do sleep 0.05; done').strip()  # fmt: skip
    assert len(cid) == 64
    ps = json.loads(ok("ps", "--json"))
    me = next(c for c in ps if c["name"] == "web")
    assert me["status"] == "running" and pid_alive(me["pid"])
    assert "web" in ok("ps")
    wait_for(lambda: "started hi" in ok("logs", "web"), what="log line")
    r = devbox("exec", "web", "sh", "-c", 'echo "$GREETING from $$"; exit 3')
    assert r.returncode == 3 and r.stdout.startswith("hi from "), r.stderr
    assert cgroup_dirs_for(cid), "container has a cgroup"
    t0 = time.monotonic()
    ok("stop", "web")
    assert time.monotonic() - t0 < 5, "the TERM trap made it exit quickly"
    assert not pid_alive(me["pid"])
    assert "bye" in ok("logs", "web")
    ps = json.loads(ok("ps", "-a", "--json"))
    assert next(c for c in ps if c["name"] == "web")["status"] == "stopped"
    assert "web" not in ok("ps")
    # a stopped container can be started again, with its writable layer kept
    ok("start", "web")
    ok("exec", "web", "sh", "-c", "echo kept > /root/f")
    ok("stop", "-t", "0", "web")
    ok("start", "web")
    assert ok("exec", "web", "cat", "/root/f") == "kept\n"
    ok("rm", "-f", "web")
    assert not cgroup_dirs_for(cid)
    r = devbox("logs", "web")
    assert r.returncode != 0 and "no such container" in r.stderr


def test_stop_kills_everything_in_the_container(busybox_image: str, names: list[str]) -> None:
    names.append("forky")
    cid = ok("run", "-d", "--name", "forky", "--network", "none", busybox_image, "sh", "-c",
             "sleep 1000 & sleep 1000 & sleep 1000").strip()  # fmt: skip
    procs = wait_for(lambda: [p for d in cgroup_dirs_for(cid) if "pids" in str(d)
                              for p in (d / "cgroup.procs").read_text().split()] if cgroup_dirs_for(cid) else None,
                     what="cgroup procs")  # fmt: skip
    pids = [int(p) for p in procs]  # type: ignore[union-attr]
    assert len(pids) >= 3
    ok("stop", "-t", "0.2", "forky")
    for p in pids:
        assert not pid_alive(p)
    ok("rm", "forky")
    assert not cgroup_dirs_for(cid)


def test_limits_inside_and_in_kernel_files(busybox_image: str, names: list[str]) -> None:
    names.append("limited")
    cid = ok("run", "-d", "--name", "limited", "--network", "none", "--memory", "64m", "--cpus", "0.5",
             "--pids", "40", busybox_image, "sleep", "1000").strip()  # fmt: skip
    mode = "unified" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    if mode == "v1":
        assert Path(f"/sys/fs/cgroup/memory/devbox/{cid}/memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert Path(f"/sys/fs/cgroup/cpu/devbox/{cid}/cpu.cfs_quota_us").read_text().strip() == "50000"
        assert Path(f"/sys/fs/cgroup/pids/devbox/{cid}/pids.max").read_text().strip() == "40"
        inside = ok("exec", "limited", "sh", "-c",
                    "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # fmt: skip
        assert inside.split() == [str(64 << 20), "40", "50000"]
    else:
        d = Path(f"/sys/fs/cgroup/devbox/{cid}")
        assert d.joinpath("memory.max").read_text().strip() == str(64 << 20)
        inside = ok("exec", "limited", "cat", "/sys/fs/cgroup/memory.max")
        assert inside.strip() == str(64 << 20)
    # the pids limit is enforced: forking beyond 40 fails inside
    r = devbox("exec", "limited", "sh", "-c", "for i in $(seq 60); do sleep 5 & done; wait")
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr or r.returncode != 0


def test_volume_workdir_user_env(busybox_image: str, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from host\n")
    tmp_path.chmod(0o755)  # nobody must be able to read it
    r = devbox("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/src", "-w", "/src", "-u", "nobody",
               "-e", "A=1", busybox_image, "sh", "-c", 'cat in.txt; pwd; id -u; echo "A=$A"; touch /src/x 2>&1 || true')  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == ["from host", "/src", "65534", "A=1"]
    r = devbox("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/src:ro", busybox_image, "sh", "-c",
               "echo x > /src/new")  # fmt: skip
    assert r.returncode != 0 and not (tmp_path / "new").exists()
    r = devbox("run", "--rm", "--network", "none", "-v", f"{tmp_path}:/src", busybox_image, "sh", "-c",
               "echo made > /src/new")  # fmt: skip
    assert r.returncode == 0 and (tmp_path / "new").read_text() == "made\n"


def _devbox_cgroups() -> set[Path]:
    return {d for base in Path("/sys/fs/cgroup").iterdir() if (base / "devbox").is_dir()
            for d in (base / "devbox").iterdir() if d.is_dir()}  # fmt: skip


def test_user_errors_are_one_line_and_leave_nothing(busybox_image: str) -> None:
    before = devbox("ps", "-a", "-q").stdout
    cgroups_before = _devbox_cgroups()
    cases = [
        (["run", "--rm", "--memory", "12q", busybox_image, "true"], "12q"),
        (["run", "--rm", "no-such-image:1", "true"], "no-such-image"),
        (["run", "--rm", "-u", "bob", "--network", "none", busybox_image, "true"], "bob"),
        (["exec", "no-such-container", "true"], "no such container"),
        (["run", "--rm", "-v", "/does/not/exist:/x", busybox_image, "true"], "/does/not/exist"),
    ]
    for args, needle in cases:
        r = devbox(*args)
        assert r.returncode not in (0, 1), args
        assert r.stderr.startswith("devbox: error: ") and r.stderr.count("\n") == 1, r.stderr
        assert needle in r.stderr
        # a foreground run forks its PID 1 before it resolves the image: the failing command itself
        # takes it back, with its cgroup and its prestart lock (checked before any other devbox
        # command, whose reconcile would hide a leftover)
        assert _devbox_cgroups() <= cgroups_before, args
        assert not list((Path(os.environ["DEVBOX_ROOT"]) / "locks").glob("prestart-*")), args
    assert devbox("ps", "-a", "-q").stdout == before


def test_not_root_is_a_clear_error(busybox_image: str) -> None:
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", DEVBOX, "ps"],
                       capture_output=True, text=True, env=dict(os.environ))  # fmt: skip
    assert r.returncode == 125 and "needs root" in r.stderr and "sudo" in r.stderr


def test_foreground_signal_reaches_container(busybox_image: str) -> None:
    p = subprocess.Popen([DEVBOX, "run", "--rm", "--network", "none", busybox_image, "sh", "-c",
                          'trap "exit 42" TERM; echo ready; while :; do sleep 0.05; done'],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(10) == 42


def _read_until(fd: int, needle: bytes | re.Pattern[bytes], timeout: float = 10) -> bytes:
    """Read the pty until `needle` (bytes, or a regex searched in all read so far) shows up."""
    buf = b""
    deadline = time.monotonic() + timeout

    def found() -> bool:
        return needle in buf if isinstance(needle, bytes) else needle.search(buf) is not None

    while not found():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {needle!r} in {buf!r}")
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
    return buf


def _children(ppid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                        out.append(int(d))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def _reap(pid: int, ok: bool) -> int:
    """Wait for the pty child; when the test already failed, kill it first (it may wait for input)."""
    if not ok:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


# After a command, busybox sh reads the next line in raw mode only once its prompt is out: a ^C or ^D
# sent before that lands in the cooked-mode line discipline and is lost. Wait for the prompt first.
PROMPT = rb"[#$] (\x1b\[6n)?$"  # busybox asks the terminal for the cursor position after it


def test_interactive_tty(busybox_image: str) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DEVBOX, [DEVBOX, "run", "--rm", "-it", "--network", "none", busybox_image, "sh"])
    done = False
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
        os.write(fd, b"echo $((6*7)); tty; stty size\n")
        out = _read_until(fd, b"33 101")
        assert b"42" in out and b"/dev/pts/0" in out
        os.write(fd, b"sleep 100\n")
        # ^C must reach `sleep` (foreground process group, terminal back in cooked mode): wait until
        # it runs as a grandchild of devbox (devbox -> the container's sh -> sleep)
        wait_for(lambda: any(_cmdline(g) == b"sleep\x00100\x00" for c in _children(pid) for g in _children(c)),
                 what="sleep 100 to run in the container")  # fmt: skip
        os.write(fd, b"\x03")  # Ctrl-C interrupts the sleep, not devbox
        _read_until(fd, re.compile(PROMPT))
        os.write(fd, b"echo alive\n")
        _read_until(fd, b"alive\r\n")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(pid, signal.SIGWINCH)
        os.write(fd, b"stty size\n")
        _read_until(fd, b"40 120")
        os.write(fd, b"exit 3\n")
        done = True
    finally:
        status = _reap(pid, done)
        os.close(fd)
    assert os.WEXITSTATUS(status) == 3


def test_exec_tty(busybox_image: str, names: list[str]) -> None:
    names.append("ttyx")
    ok("run", "-d", "--name", "ttyx", "--network", "none", busybox_image, "sleep", "1000")
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DEVBOX, [DEVBOX, "exec", "-it", "ttyx", "sh"])
    done = False
    try:
        os.write(fd, b"tty; echo $$\n")
        out = _read_until(fd, re.compile(rb"/dev/pts/\d+\r\n\d+\r\n.*" + PROMPT, re.DOTALL))
        assert b"/dev/pts/" in out
        os.write(fd, b"\x04")  # Ctrl-D ends the shell
        done = True
    finally:
        status = _reap(pid, done)
        os.close(fd)
    assert os.WEXITSTATUS(status) == 0


def test_stdin_pipe(busybox_image: str) -> None:
    r = devbox("run", "--rm", "-i", "--network", "none", busybox_image, "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert (r.returncode, r.stdout) == (0, "SHOUT\n")


def test_crash_mid_start_is_reconciled(busybox_image: str) -> None:
    r = devbox("run", "-d", "--name", "crashy", "--network", "none", busybox_image, "sleep", "1000",
               env={"DEVBOX_FAULT": "start:after-init"})  # fmt: skip
    assert r.returncode == -signal.SIGKILL
    state_dir = Path(os.environ["DEVBOX_ROOT"]) / "containers"
    cid = next(d.name for d in state_dir.iterdir() if (d / "spec.json").exists()
               and json.loads((d / "spec.json").read_text())["name"] == "crashy")  # fmt: skip
    st = json.loads((state_dir / cid / "state.json").read_text())
    assert st["status"] == "creating"
    init_pid = st["pid"]
    # the init blocked on "go" sees the channel close and exits by itself
    wait_for(lambda: init_pid is None or not pid_alive(init_pid), what="orphaned init to exit")
    ps = json.loads(ok("ps", "-a", "--json"))  # the next command reconciles
    assert next(c for c in ps if c["name"] == "crashy")["status"] in ("created", "stopped")
    assert not cgroup_dirs_for(cid)
    ok("rm", "crashy")
    assert not (state_dir / cid).exists()


def test_missing_layer_after_prestart_leaves_nothing(busybox_image: str, tmp_path: Path) -> None:
    """A foreground run forks PID 1 before start() checks the image's layers; when that check fails,
    PID 1 is killed and its cgroup and lock go, in the same command."""
    import io
    import tarfile
    import uuid

    data = uuid.uuid4().hex.encode()  # a layer of its own: deleting it breaks no other image
    tar = tmp_path / "one.tar"
    with tarfile.open(tar, "w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    layers = Path(os.environ["DEVBOX_ROOT"]) / "layers"
    before = set(os.listdir(layers))
    name = f"brokenlayer:{uuid.uuid4().hex[:8]}"
    ok("image", "import", os.fspath(tar), name)
    try:
        (new,) = set(os.listdir(layers)) - before
        subprocess.run(["rm", "-rf", os.fspath(layers / new)], check=True)
        cgroups_before = _devbox_cgroups()
        r = devbox("run", "--rm", "--network", "none", name, "/hello")
        assert r.returncode == 125 and "is missing" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert _devbox_cgroups() <= cgroups_before
        assert not list((Path(os.environ["DEVBOX_ROOT"]) / "locks").glob("prestart-*"))
    finally:
        devbox("image", "rm", "-f", name)
