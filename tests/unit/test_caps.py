"""Capabilities: the pure parts, the order of drop_privileges against a recording fake, and (root) a
forked child that really drops privileges and reports /proc/self/status."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from devbox.errors import ConfigError, KernelError
from devbox.runtime import caps, linux, users
from devbox.runtime.users import ResolvedUser


def test_numbers_match_linux_capability_h() -> None:
    assert len(caps.CAPS) == 41
    assert caps.number("CAP_CHOWN") == 0
    assert caps.number("CAP_NET_ADMIN") == 12
    assert caps.number("sys_admin") == 21
    assert caps.number("CAP_MKNOD") == 27
    assert caps.number("CAP_SETFCAP") == 31
    assert caps.number("CAP_CHECKPOINT_RESTORE") == 40
    assert caps.name(19) == "CAP_SYS_PTRACE"
    with pytest.raises(ValueError):
        caps.name(41)


def test_default_set_is_dockers() -> None:
    assert len(caps.DEFAULT_CAPS) == 14
    assert caps.DEFAULT_MASK == 0xA80425FB  # docker's CapBnd/CapEff for root: 00000000a80425fb
    assert caps.names(caps.DEFAULT_MASK)[:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER"]


def test_mask_names_round_trip() -> None:
    m = caps.mask(["CAP_KILL", "net_raw", 40])
    assert m == (1 << 5) | (1 << 13) | (1 << 40)
    assert caps.names(m) == ["CAP_KILL", "CAP_NET_RAW", "CAP_CHECKPOINT_RESTORE"]
    assert caps.mask([]) == 0
    assert caps.mask(["all"]) == caps.ALL_MASK


def test_parse_cap_list() -> None:
    assert caps.parse_cap_list("CAP_NET_ADMIN,sys_ptrace") == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE"]
    assert caps.parse_cap_list(" net_admin , NET_ADMIN,") == ["CAP_NET_ADMIN"]
    assert caps.parse_cap_list(["Cap_Bpf"]) == ["CAP_BPF"]
    assert caps.parse_cap_list("all") == list(caps.CAPS)
    assert caps.parse_cap_list("") == []
    with pytest.raises(ConfigError) as e:
        caps.parse_cap_list("CAP_NET_ADMIN,CAP_FLY")
    assert e.value.message == "unknown capability 'CAP_FLY'"
    assert e.value.hint and "capabilities(7)" in e.value.hint


def test_keep_mask_add_drop() -> None:
    assert caps.keep_mask() == caps.DEFAULT_MASK
    m = caps.keep_mask(add=["NET_ADMIN"], drop=["MKNOD", "CAP_NET_RAW"])
    assert m == (caps.DEFAULT_MASK | 1 << 12) & ~(1 << 27) & ~(1 << 13)
    assert caps.keep_mask(drop=["ALL"]) == 0
    assert caps.keep_mask(add=["ALL"]) == caps.ALL_MASK
    assert caps.keep_mask(add=["SYS_ADMIN"], drop=["SYS_ADMIN"]) == caps.DEFAULT_MASK  # drop wins


def test_target_sets() -> None:
    assert caps.target_sets(0xFF, 0) == (0xFF, 0xFF, 0)  # root: eff = prm = keep, inheritable empty
    assert caps.target_sets(0xFF, 1000) == (0, 0, 0)  # non-root: only the bounding set keeps `keep`


@pytest.fixture
def fake_kernel(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(linux, "cap_last_cap", lambda: 40)
    monkeypatch.setattr(linux, "capget", lambda: (caps.ALL_MASK, caps.ALL_MASK, 0))
    monkeypatch.setattr(linux, "drop_bounding", lambda keep: calls.append(("drop_bounding", keep)))
    monkeypatch.setattr(linux, "clear_ambient", lambda: calls.append(("clear_ambient",)))

    def prctl(*a: int) -> int:
        calls.append(("prctl", *a))
        return 0

    monkeypatch.setattr(linux, "prctl", prctl)
    monkeypatch.setattr(linux, "capset", lambda e, p, i: calls.append(("capset", e, p, i)))
    monkeypatch.setattr(os, "setgroups", lambda g: calls.append(("setgroups", list(g))))
    monkeypatch.setattr(os, "setresgid", lambda *a: calls.append(("setresgid", *a)))
    monkeypatch.setattr(os, "setresuid", lambda *a: calls.append(("setresuid", *a)))
    return calls


def test_drop_privileges_order_non_root(fake_kernel: list[tuple[Any, ...]]) -> None:
    user = ResolvedUser(uid=1000, gid=1000, additional_gids=(27, 100), home="/home/dev", name="dev")
    caps.drop_privileges(caps.DEFAULT_MASK, user)
    assert fake_kernel == [
        ("drop_bounding", caps.DEFAULT_MASK),  # while still root (needs CAP_SETPCAP)
        ("clear_ambient",),
        ("setgroups", [27, 100]),
        ("setresgid", 1000, 1000, 1000),
        ("setresuid", 1000, 1000, 1000),
        ("capset", 0, 0, 0),
        ("clear_ambient",),
    ]


def test_drop_privileges_order_root(fake_kernel: list[tuple[Any, ...]]) -> None:
    keep = caps.keep_mask(add=["NET_ADMIN"])
    caps.drop_privileges(keep, ResolvedUser(uid=0, gid=0, home="/root", name="root"))
    assert fake_kernel == [
        ("drop_bounding", keep),
        ("clear_ambient",),
        ("setgroups", []),
        ("setresgid", 0, 0, 0),
        ("setresuid", 0, 0, 0),
        ("capset", keep, keep, 0),
        ("clear_ambient",),
    ]


def test_drop_privileges_masks_caps_the_kernel_lacks(
    fake_kernel: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linux, "cap_last_cap", lambda: 37)  # an older kernel: no PERFMON, BPF, ...
    caps.drop_privileges(caps.ALL_MASK, ResolvedUser(uid=0, gid=0))
    assert fake_kernel[0] == ("drop_bounding", (1 << 38) - 1)


def test_drop_privileges_refuses_caps_devbox_lacks(
    fake_kernel: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linux, "capget", lambda: (caps.DEFAULT_MASK, caps.DEFAULT_MASK, 0))
    with pytest.raises(KernelError) as e:
        caps.drop_privileges(caps.keep_mask(add=["SYS_RESOURCE"]), ResolvedUser(uid=0, gid=0))
    assert e.value.message == "cannot keep CAP_SYS_RESOURCE: devbox itself does not have it"
    assert fake_kernel == []  # nothing done


def test_drop_privileges_wraps_kernel_errors(
    fake_kernel: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def eperm(*a: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setresuid", eperm)
    with pytest.raises(KernelError, match="cannot switch to uid 5 gid 5"):
        caps.drop_privileges(caps.DEFAULT_MASK, ResolvedUser(uid=5, gid=5))


# ---- root: a real forked child ------------------------------------------------------------------------


def _status_masks(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            out[k] = int(v.strip(), 16)
    return out


def _in_child(user: ResolvedUser, keep: int, exec_cat: bool) -> tuple[int, dict[str, Any]]:
    """Fork; the child drops privileges and reports /proc/self/status (before exec, or from `cat`
    after exec with no_new_privs set) and its ids through a pipe. Returns (wait status, report)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(r)
            caps.drop_privileges(keep, user)
            ids = {"uid": os.getresuid(), "gid": os.getresgid(), "groups": sorted(os.getgroups())}
            if exec_cat:
                os.write(w, (json.dumps(ids) + "\n").encode())
                linux.set_no_new_privs()
                os.dup2(w, 1)
                os.execv("/bin/cat", ["cat", "/proc/self/status"])
            with open("/proc/self/status") as f:
                os.write(w, (json.dumps(ids) + "\n" + f.read()).encode())
            code = 0
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    first, _, rest = b"".join(chunks).decode().partition("\n")
    report = json.loads(first)
    report["masks"] = _status_masks(rest)
    return status, report


@pytest.mark.root
@pytest.mark.parametrize("exec_cat", [False, True], ids=["before-exec", "after-exec"])
def test_real_drop_privileges_root(exec_cat: bool) -> None:
    keep = caps.DEFAULT_MASK
    status, rep = _in_child(ResolvedUser(uid=0, gid=0, home="/root", name="root"), keep, exec_cat)
    assert "error" not in rep and os.waitstatus_to_exitcode(status) == 0, rep
    assert rep["masks"] == {"CapInh": 0, "CapPrm": keep, "CapEff": keep, "CapBnd": keep, "CapAmb": 0}
    assert rep["uid"] == [0, 0, 0] and rep["groups"] == []


@pytest.mark.root
@pytest.mark.parametrize("exec_cat", [False, True], ids=["before-exec", "after-exec"])
def test_real_drop_privileges_non_root(exec_cat: bool) -> None:
    keep = caps.keep_mask(add=["NET_ADMIN"])
    user = ResolvedUser(uid=65534, gid=65533, additional_gids=(100, 4242), home="/", name="nobody")
    status, rep = _in_child(user, keep, exec_cat)
    assert "error" not in rep and os.waitstatus_to_exitcode(status) == 0, rep
    assert rep["masks"] == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": keep, "CapAmb": 0}
    assert rep["uid"] == [65534] * 3 and rep["gid"] == [65533] * 3 and rep["groups"] == [100, 4242]


@pytest.mark.root
def test_real_child_cannot_use_dropped_caps() -> None:
    """Root without CAP_SETUID in `keep` cannot setuid afterwards: the drop is real, not just reported."""
    keep = caps.DEFAULT_MASK & ~caps.mask(["CAP_SETUID"])
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            caps.drop_privileges(keep, ResolvedUser(uid=0, gid=0))
            try:
                os.setresuid(1, 1, 1)
                os.write(w, b"setuid-worked")
            except PermissionError:
                os.write(w, b"EPERM")
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 100)
    os.close(r)
    os.waitpid(pid, 0)
    assert out == b"EPERM"


def test_switch_user_order(fake_kernel: list[tuple[Any, ...]]) -> None:
    users.switch_user(ResolvedUser(uid=7, gid=8, additional_gids=(9,)))
    assert fake_kernel == [("setgroups", [9]), ("setresgid", 8, 8, 8), ("setresuid", 7, 7, 7)]
