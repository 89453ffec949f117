"""Resolve a container's user from the image's own /etc/passwd and /etc/group, without NSS.

The files are read through a directory fd of the container root with openat2(RESOLVE_IN_ROOT |
RESOLVE_NO_MAGICLINKS): the image may hold symlinks such as `etc/passwd -> /etc/shadow` or
`etc -> ../../..`, and those must resolve inside the container root, never on the host. (Today
RESOLVE_IN_ROOT also refuses magic links such as /proc/self/root; RESOLVE_NO_MAGICLINKS makes that
explicit.) Only regular files are read (a FIFO would block, a device could be endless), at most
MAX_FILE bytes.

User specs (docker's `--user`, runc's GetExecUser):
  name            uid, gid, home from passwd; supplementary groups = /etc/group entries listing name
  uid             as name if the uid is in passwd; otherwise gid 0, home "/", no groups (docker)
  name:group      group by name from /etc/group, or a number
  uid:gid, uid:groupname
An explicit group replaces the supplementary groups (they only make sense in the implicit form).
None or "" means root (uid 0).
"""

from __future__ import annotations

import errno
import os
import stat

from devbox.errors import ConfigError
from devbox.record import field, record
from devbox.runtime import linux

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

MAX_FILE = 4 * 1024 * 1024
MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel
_RESOLVE = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_HINT_SPEC = "use name, uid, name:group, uid:gid or uid:group"


@record(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = field(default_factory=tuple)
    home: str = "/"
    name: str | None = None  # None when the uid is not in the image's /etc/passwd

    def to_dict(self) -> dict[str, object]:
        return {
            "uid": self.uid,
            "gid": self.gid,
            "additional_gids": list(self.additional_gids),
            "home": self.home,
            "name": self.name,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResolvedUser:
        return cls(
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            additional_gids=tuple(int(g) for g in d.get("additional_gids") or ()),
            home=str(d.get("home") or "/"),
            name=d.get("name"),
        )


@record(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@record(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def read_root_file(root_fd: int, relpath: str) -> str | None:
    """Contents of `relpath` inside the root `root_fd`, symlinks resolved inside it; None if missing."""
    for attempt in range(8):
        try:
            fd = linux.openat2(root_fd, relpath, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, resolve=_RESOLVE)
            break
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            if e.errno == errno.EAGAIN and attempt < 7:  # a rename raced with ".." resolution: retry
                continue
            if e.errno == errno.ENOSYS:
                raise ConfigError(
                    f"cannot read the image's /{relpath}: openat2 is not supported",
                    hint="devbox needs Linux >= 5.6",
                ) from e
            raise ConfigError(f"cannot read the image's /{relpath}: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(
                f"the image's /{relpath} is not a regular file",
                hint="fix the image: it must be a plain text file",
            )
        if st.st_size > MAX_FILE:
            raise ConfigError(f"the image's /{relpath} is too large ({st.st_size} bytes)")
        chunks = []
        total = 0
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_FILE:
                raise ConfigError(f"the image's /{relpath} is too large")
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _id(s: str) -> int | None:
    if s.isascii() and s.isdigit():
        n = int(s)
        if n <= MAX_ID:
            return n
    return None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """name:password:uid:gid:gecos:home:shell lines; malformed lines are skipped (as glibc does)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        f = line.split(":")
        if len(f) < 7:
            continue
        uid, gid = _id(f[2]), _id(f[3])
        if uid is None or gid is None or not f[0]:
            continue
        out.append(PasswdEntry(f[0], uid, gid, f[5] or "/"))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    """name:password:gid:member,member lines."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        f = line.split(":")
        if len(f) < 4:
            continue
        gid = _id(f[2])
        if gid is None or not f[0]:
            continue
        out.append(GroupEntry(f[0], gid, tuple(m.strip() for m in f[3].split(",") if m.strip())))
    return out


def _parse_spec(spec: str) -> tuple[str, str | None]:
    user, sep, group = spec.partition(":")
    if not user or (sep and not group) or ":" in group:
        raise ConfigError(f"invalid user '{spec}'", hint=_HINT_SPEC)
    return user, (group if sep else None)


def resolve_user(root: int | str | os.PathLike[str], spec: str | None) -> ResolvedUser:
    """Resolve `spec` against the passwd/group files of the container root (a dir fd or a path)."""
    if isinstance(root, int):
        return _resolve(root, spec)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return _resolve(fd, spec)
    finally:
        os.close(fd)


def _resolve(root_fd: int, spec: str | None) -> ResolvedUser:
    user_part, group_part = _parse_spec(spec.strip()) if spec and spec.strip() else ("0", None)
    passwd_text = read_root_file(root_fd, "etc/passwd")
    passwd = parse_passwd(passwd_text or "")

    uid = _id(user_part)
    if uid is not None:
        entry = next((p for p in passwd if p.uid == uid), None)
    else:
        entry = next((p for p in passwd if p.name == user_part), None)
        if entry is None:
            raise ConfigError(
                f"user '{user_part}' not found: the image has no /etc/passwd"
                if passwd_text is None
                else f"user '{user_part}' not found in the image's /etc/passwd",
                hint="create the user in a build step (run: useradd ...), or give a numeric uid",
            )
        uid = entry.uid
    gid = entry.gid if entry else 0
    home = entry.home if entry else "/"
    name = entry.name if entry else None

    group_text = read_root_file(root_fd, "etc/group") if (group_part is not None or name) else None
    groups = parse_group(group_text or "")
    additional: tuple[int, ...] = ()
    if group_part is not None:
        g = _id(group_part)
        if g is None:
            ge = next((x for x in groups if x.name == group_part), None)
            if ge is None:
                raise ConfigError(
                    f"group '{group_part}' not found in the image's /etc/group",
                    hint="create the group in a build step (run: groupadd ...), or give a numeric gid",
                )
            g = ge.gid
        gid = g
    elif name:
        seen: list[int] = []
        for ge in groups:
            if name in ge.members and ge.gid not in seen:
                seen.append(ge.gid)
        additional = tuple(seen)
    return ResolvedUser(uid=uid, gid=gid, additional_gids=additional, home=home, name=name)


def switch_user(user: ResolvedUser) -> None:
    """setgroups, setresgid, setresuid, in that order (each needs the privilege the next drops).

    Capabilities are the caller's business: use caps.drop_privileges, which calls this at the right
    point."""
    os.setgroups(list(user.additional_gids))
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
