"""Linux capabilities: names <-> numbers, docker's default set, and dropping privileges in the
container's init child just before exec.

What a container process ends up with (docker's semantics, moby >= 20.10.14):
  root user (uid 0)   bounding = effective = permitted = keep; inheritable = ambient = empty.
                      After exec, root's permitted set is the bounding set, so it keeps `keep`.
  non-root user       bounding = keep; effective = permitted = inheritable = ambient = empty. Only
                      binaries with file capabilities (setcap) gain caps, and never beyond `keep`.
The inheritable set is empty for every user: docker filled it with the default set until
CVE-2022-24769 (GHSA-2mm7-x5h6-5pvq), which let a non-root user gain caps through a binary's
inheritable file capabilities. devbox follows the fixed behaviour.

Order in drop_privileges (each step needs a capability a later step gives up):
  1. drop the bounding set       needs CAP_SETPCAP, which root loses on setuid
  2. clear ambient
  3. setgroups, setresgid         need CAP_SETGID
  4. PR_SET_KEEPCAPS              only if a non-root target must keep a permitted set (not docker's default)
  5. setresuid                    needs CAP_SETUID; the kernel clears permitted/effective for non-root
  6. capset(eff, prm, inh)        the final sets
  7. clear ambient again, PR_SET_KEEPCAPS 0
no_new_privs is NOT set here: the caller sets it last, right before exec.
"""

from __future__ import annotations

from devbox.errors import ConfigError, KernelError
from devbox.runtime import linux

TYPE_CHECKING = False  # typing costs ~4 ms to import; only type checkers need it here
if TYPE_CHECKING:
    from collections.abc import Iterable

    from devbox.runtime.users import ResolvedUser

# linux/capability.h, in number order
CAPS: tuple[str, ...] = (
    "CAP_CHOWN",  # 0
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",  # 5
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",  # 10
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",  # 15
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",  # 20
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",  # 25
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",  # 30
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",  # 35
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",  # 40
)
LAST_CAP = len(CAPS) - 1
ALL_MASK = (1 << len(CAPS)) - 1
_NUMBERS = {name: i for i, name in enumerate(CAPS)}

DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_HINT = "use names from capabilities(7), with or without the CAP_ prefix: NET_ADMIN, CAP_SYS_PTRACE"


def normalize(name: str) -> str:
    """'net_admin' / 'CAP_NET_ADMIN' -> 'CAP_NET_ADMIN'; unknown names raise ConfigError."""
    n = name.strip().upper()
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    if n not in _NUMBERS:
        raise ConfigError(f"unknown capability '{name.strip()}'", hint=_HINT)
    return n


def number(name: str) -> int:
    return _NUMBERS[normalize(name)]


def name(num: int) -> str:
    if not 0 <= num <= LAST_CAP:
        raise ValueError(f"unknown capability number {num}")
    return CAPS[num]


def mask(names: Iterable[str | int]) -> int:
    """Bitmask of capabilities given by name or number; "ALL" is every capability."""
    m = 0
    for n in names:
        if isinstance(n, str) and n.strip().upper() in ("ALL", "CAP_ALL"):
            m |= ALL_MASK
        else:
            m |= 1 << (n if isinstance(n, int) else number(n))
    return m


def names(m: int) -> list[str]:
    """Capability names in the bitmask `m`, in number order."""
    return [c for i, c in enumerate(CAPS) if m & (1 << i)]


DEFAULT_MASK = mask(DEFAULT_CAPS)


def parse_cap_list(value: str | Iterable[str]) -> list[str]:
    """'CAP_NET_ADMIN,sys_ptrace' -> ['CAP_NET_ADMIN', 'CAP_SYS_PTRACE']. 'ALL' means every capability."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        if not item.strip():
            continue
        if item.strip().upper() in ("ALL", "CAP_ALL"):
            return list(CAPS)
        n = normalize(item)
        if n not in out:
            out.append(n)
    return out


def keep_mask(add: Iterable[str] = (), drop: Iterable[str] = (), base: Iterable[str] = DEFAULT_CAPS) -> int:
    """docker's --cap-add/--cap-drop over `base`: drop wins, and 'ALL' works on either side."""
    m = mask(parse_cap_list(list(base)))
    m |= mask(parse_cap_list(list(add)))
    m &= ~mask(parse_cap_list(list(drop)))
    return m


def target_sets(keep: int, uid: int) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) a process running as `uid` gets (see the module doc)."""
    if uid == 0:
        return keep, keep, 0
    return 0, 0, 0


def _kernel_mask(keep: int) -> int:
    """`keep` limited to the capabilities this kernel knows."""
    return keep & ((1 << (linux.cap_last_cap() + 1)) - 1)


def _check_have(keep: int) -> None:
    _, permitted, _ = linux.capget()
    missing = keep & ~permitted
    if missing:
        raise KernelError(
            f"cannot keep {', '.join(names(missing))}: devbox itself does not have "
            f"{'it' if bin(missing).count('1') == 1 else 'them'}",
            hint="drop them (--cap-drop), or run devbox with a larger capability bounding set",
        )


def apply(keep_mask: int) -> None:
    """For a process that stays root: bounding = effective = permitted = keep; inheritable and
    ambient empty."""
    keep = _kernel_mask(keep_mask)
    _check_have(keep)
    try:
        linux.drop_bounding(keep)
        linux.clear_ambient()
        linux.capset(*target_sets(keep, 0))
    except OSError as e:
        raise KernelError(f"cannot drop capabilities: {e.strerror}") from e


def drop_privileges(keep_mask: int, user: ResolvedUser) -> None:
    """Switch to `user` and drop to `keep_mask`, in the order the kernel requires (see the module
    doc). Runs in the container's init child, as root, just before exec; no_new_privs is left to the
    caller."""
    from devbox.runtime import users

    keep = _kernel_mask(keep_mask)
    _check_have(keep)
    eff, prm, inh = target_sets(keep, user.uid)
    keepcaps = user.uid != 0 and prm != 0
    try:
        linux.drop_bounding(keep)
        linux.clear_ambient()
        if keepcaps:
            linux.prctl(linux.PR_SET_KEEPCAPS, 1)
        users.switch_user(user)
        linux.capset(eff, prm, inh)
        if keepcaps:
            linux.prctl(linux.PR_SET_KEEPCAPS, 0)
        linux.clear_ambient()
    except OSError as e:
        raise KernelError(
            f"cannot switch to uid {user.uid} gid {user.gid} with capabilities {names(keep) or 'none'}: "
            f"{e.strerror}",
            hint="devbox must start the container as root",
        ) from e
