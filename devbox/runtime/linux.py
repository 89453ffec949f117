"""The only ctypes module: thin wrappers for the syscalls Python 3.11's `os` lacks.

Each wrapper raises OSError(errno, strerror, filename) on failure through one helper, `oserror`.
No policy and no logging here.
"""

from __future__ import annotations

import ctypes
import os
import struct

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

libc = ctypes.CDLL(None, use_errno=True)

# namespaces (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MS_RELATIME = 1 << 21

MNT_DETACH = 2
UMOUNT_NOFOLLOW = 8

# prctl
PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_KEEPCAPS = 8

# openat2 resolve flags (linux/openat2.h)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# statfs magics
OVERLAYFS_SUPER_MAGIC = 0x794C7630
CGROUP2_SUPER_MAGIC = 0x63677270
CGROUP_SUPER_MAGIC = 0x27E0EB
TMPFS_MAGIC = 0x01021994

_NR = {
    "x86_64": {"pivot_root": 155, "openat2": 437, "setns": 308, "unshare": 272, "capget": 125,
               "capset": 126},
    "aarch64": {"pivot_root": 41, "openat2": 437, "setns": 268, "unshare": 97, "capget": 90,
                "capset": 91},
}  # fmt: skip
_nr = _NR.get(os.uname().machine, _NR["x86_64"])

libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
libc.unshare.argtypes = (ctypes.c_int,)
libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
libc.syscall.restype = ctypes.c_long


def oserror(name: str, filename: str | None = None) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{name}: {os.strerror(err)}", filename)


def _b(s: str | bytes | None) -> bytes | None:
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def mount(src: str | None, dst: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    if libc.mount(_b(src), _b(dst), _b(fstype), flags, _b(data)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype or ''} {src} -> {dst} ({flags_str(flags)}"
                      f"{' ' + data if data else ''}): {os.strerror(err)}", dst)  # fmt: skip


def umount(dst: str, flags: int = 0) -> None:
    if libc.umount2(_b(dst), flags) < 0:
        raise oserror("umount2", dst)


def unshare(flags: int) -> None:
    if libc.unshare(flags) < 0:
        raise oserror("unshare")


def setns(fd: int, nstype: int = 0) -> None:
    if libc.setns(fd, nstype) < 0:
        raise oserror("setns")


def pivot_root(new_root: str, put_old: str) -> None:
    if libc.syscall(_nr["pivot_root"], _b(new_root), _b(put_old)) < 0:
        raise oserror("pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    if libc.sethostname(raw, len(raw)) < 0:
        raise oserror("sethostname")


def prctl(option: int, a2: int = 0, a3: int = 0, a4: int = 0, a5: int = 0) -> int:
    r = libc.prctl(option, a2, a3, a4, a5)
    if r < 0:
        raise oserror("prctl")
    return int(r)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_child_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig(sig: int) -> None:
    prctl(PR_SET_PDEATHSIG, sig)


# capabilities (linux/capability.h, version 3: two 32-bit words per set)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]  # fmt: skip


def capget() -> tuple[int, int, int]:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.syscall(_nr["capget"], ctypes.byref(hdr), data) < 0:
        raise oserror("capget")
    eff = data[0].effective | data[1].effective << 32
    prm = data[0].permitted | data[1].permitted << 32
    inh = data[0].inheritable | data[1].inheritable << 32
    return eff, prm, inh


def capset(effective: int, permitted: int, inheritable: int) -> None:
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    if libc.syscall(_nr["capset"], ctypes.byref(hdr), data) < 0:
        raise oserror("capset")


def cap_last_cap() -> int:
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def drop_bounding(keep: int) -> None:
    """Drop every capability not in the bitmask `keep` from the bounding set."""
    for cap in range(cap_last_cap() + 1):
        if not keep & (1 << cap):
            prctl(PR_CAPBSET_DROP, cap)


def clear_ambient() -> None:
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the `resolve` restrictions."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    fd = libc.syscall(_nr["openat2"], ctypes.c_int(dirfd), _b(path), ctypes.byref(how),
                      ctypes.c_size_t(ctypes.sizeof(how)))  # fmt: skip
    if fd < 0:
        raise oserror("openat2", path)
    return int(fd)


def statfs_type(path: str) -> int:
    """f_type of the filesystem holding `path`."""

    class _Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 112)]

    buf = _Statfs()
    libc.statfs.argtypes = (ctypes.c_char_p, ctypes.c_void_p)
    if libc.statfs(_b(path), ctypes.byref(buf)) < 0:
        raise oserror("statfs", path)
    return int(buf.f_type) & 0xFFFFFFFF


def proc_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat), None if gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = raw[raw.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


_MS_NAMES = [(MS_RDONLY, "ro"), (MS_NOSUID, "nosuid"), (MS_NODEV, "nodev"), (MS_NOEXEC, "noexec"),
             (MS_REMOUNT, "remount"), (MS_BIND, "bind"), (MS_MOVE, "move"), (MS_REC, "rec"),
             (MS_PRIVATE, "private"), (MS_SLAVE, "slave"), (MS_STRICTATIME, "strictatime")]  # fmt: skip


def flags_str(flags: int) -> str:
    names = [n for f, n in _MS_NAMES if flags & f]
    return ",".join(names) or "0"


# termios ioctls for ptys
TIOCSCTTY = 0x540E
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGWINSZ = 0x5413
TIOCSWINSZ = 0x5414


def open_pty_master(ptmx: str = "/dev/ptmx") -> tuple[int, str]:
    """Open a pty master on `ptmx` and unlock it; return (master_fd, slave_path)."""
    import fcntl

    fd = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(fd, TIOCGPTN, b"\0\0\0\0"))[0]
    return fd, f"/dev/pts/{n}"


# -- sockets without socket.py ----------------------------------------------------------------------
# The socket module's Python layer (enums, selectors, array) costs ~3 ms to import; the start path
# needs only a socketpair and file descriptors passed over it, which the C module _socket provides.


def seqpacket_pair() -> tuple[Any, Any]:
    """A connected AF_UNIX SOCK_SEQPACKET pair (close-on-exec, as socket.socketpair makes them)."""
    import _socket

    return _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)


def send_fds(sock: Any, data: bytes, fds: list[int]) -> None:
    """socket.send_fds: one message carrying `fds` (SCM_RIGHTS)."""
    import _socket

    sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])


def recv_fds(sock: Any, bufsize: int, maxfds: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds: one message and the descriptors that came with it."""
    import _socket

    msg, ancdata, _flags, _addr = sock.recvmsg(bufsize, _socket.CMSG_LEN(maxfds * 4))
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            n = len(data) // 4
            fds.extend(struct.unpack(f"{n}i", data[: n * 4]))
    return msg, fds
