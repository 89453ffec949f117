"""resolve_user against fake container roots under tmp_path, including hostile symlinks that would
read the host's files if followed outside the root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devbox.errors import ConfigError
from devbox.runtime.users import ResolvedUser, parse_group, parse_passwd, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
bad:x:notanumber:1::/:/bin/sh
dev:x:1000:1000:Dev,,,:/home/dev:/bin/bash
svc:x:999:998::/var/lib/svc:/usr/sbin/nologin
"""
GROUP = """\
root:x:0:
dev:x:1000:
docker:x:999:dev
video:x:44:other,dev
staff:x:50:
svcgroup:x:998:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text(PASSWD)
    (tmp_path / "etc/group").write_text(GROUP)
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, ResolvedUser(0, 0, (), "/root", "root")),
        ("", ResolvedUser(0, 0, (), "/root", "root")),
        ("root", ResolvedUser(0, 0, (), "/root", "root")),
        ("dev", ResolvedUser(1000, 1000, (999, 44), "/home/dev", "dev")),
        ("1000", ResolvedUser(1000, 1000, (999, 44), "/home/dev", "dev")),
        ("svc", ResolvedUser(999, 998, (), "/var/lib/svc", "svc")),
        ("4242", ResolvedUser(4242, 0, (), "/", None)),  # unknown uid: docker's gid 0, home /
        ("dev:staff", ResolvedUser(1000, 50, (), "/home/dev", "dev")),  # explicit group: no supplementary
        ("dev:77", ResolvedUser(1000, 77, (), "/home/dev", "dev")),
        ("1000:1000", ResolvedUser(1000, 1000, (), "/home/dev", "dev")),
        ("4242:video", ResolvedUser(4242, 44, (), "/", None)),
        ("4242:4343", ResolvedUser(4242, 4343, (), "/", None)),
    ],
)
def test_resolve(rootfs: Path, spec: str | None, expected: ResolvedUser) -> None:
    assert resolve_user(rootfs, spec) == expected


def test_resolve_with_a_dir_fd(rootfs: Path) -> None:
    fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY)
    try:
        assert resolve_user(fd, "dev").uid == 1000
    finally:
        os.close(fd)


def test_unknown_user(rootfs: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_user(rootfs, "bob")
    assert e.value.message == "user 'bob' not found in the image's /etc/passwd"
    assert e.value.hint and "useradd" in e.value.hint


def test_unknown_group(rootfs: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_user(rootfs, "dev:wheel")
    assert e.value.message == "group 'wheel' not found in the image's /etc/group"
    assert e.value.hint


@pytest.mark.parametrize("spec", [":", "dev:", ":dev", "a:b:c", "99999999999"])
def test_invalid_specs(rootfs: Path, spec: str) -> None:
    with pytest.raises(ConfigError):
        resolve_user(rootfs, spec)


def test_no_passwd_in_image(tmp_path: Path) -> None:
    assert resolve_user(tmp_path, None) == ResolvedUser(0, 0, (), "/", None)
    assert resolve_user(tmp_path, "1000:1000") == ResolvedUser(1000, 1000, (), "/", None)
    with pytest.raises(ConfigError, match="user 'dev' not found: the image has no /etc/passwd"):
        resolve_user(tmp_path, "dev")
    with pytest.raises(ConfigError, match="group 'staff' not found"):
        resolve_user(tmp_path, "0:staff")


def test_absolute_symlink_resolves_inside_the_root(tmp_path: Path) -> None:
    """etc/passwd -> /etc/shadow must read <root>/etc/shadow, never the host's."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow").write_text("dev:x:1234:1234::/fake:/bin/sh\n")
    (tmp_path / "etc/passwd").symlink_to("/etc/shadow")
    assert resolve_user(tmp_path, "dev") == ResolvedUser(1234, 1234, (), "/fake", "dev")
    with pytest.raises(ConfigError, match="user 'root' not found"):
        resolve_user(tmp_path, "root")  # the host's /etc/shadow (or passwd) has root: not read


def test_dotdot_symlinks_cannot_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    (root / "data/passwd").write_text("inside:x:7:7::/in:/bin/sh\n")
    (root / "etc").symlink_to("../../../../../../../../data")  # clamps at the container root
    assert resolve_user(root, "inside").uid == 7
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/passwd").write_text("outside:x:8:8::/out:/bin/sh\n")
    (root / "etc").unlink()
    (root / "etc").symlink_to("../outside")  # would be tmp_path/outside if followed naively
    with pytest.raises(ConfigError, match="user 'outside' not found: the image has no /etc/passwd"):
        resolve_user(root, "outside")


def test_symlinked_etc_to_host_etc(tmp_path: Path) -> None:
    (tmp_path / "etc").symlink_to("/etc")  # inside the root, /etc is the symlink itself: a loop
    with pytest.raises(ConfigError):
        resolve_user(tmp_path, "root")


def test_fifo_does_not_block(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.mkfifo(tmp_path / "etc/passwd")
    with pytest.raises(ConfigError, match="is not a regular file"):
        resolve_user(tmp_path, "root")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "etc/passwd").mkdir(parents=True)
    with pytest.raises(ConfigError, match="is not a regular file"):
        resolve_user(tmp_path, "0")


def test_parsers_skip_malformed_lines() -> None:
    assert [p.name for p in parse_passwd(PASSWD)] == ["root", "daemon", "dev", "svc"]
    g = parse_group(GROUP)
    assert g[3].name == "video" and g[3].members == ("other", "dev")


def test_dict_round_trip() -> None:
    u = ResolvedUser(1000, 1000, (27, 44), "/home/dev", "dev")
    assert ResolvedUser.from_dict(u.to_dict()) == u
    assert ResolvedUser.from_dict(ResolvedUser(5, 0).to_dict()) == ResolvedUser(5, 0, (), "/", None)


@pytest.mark.root
def test_magic_link_through_a_real_proc_is_refused(tmp_path: Path) -> None:
    """A container root with procfs mounted (as a running box has) and etc/passwd -> /proc/self/root/...:
    /proc/self/root is a magic link to the *host's* root; RESOLVE_NO_MAGICLINKS must refuse it.
    Runs in a forked child with a private mount namespace, so the host's mount table is untouched."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc").mkdir()
    (tmp_path / "etc/passwd").symlink_to("/proc/self/root/etc/passwd")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            from devbox.runtime import linux

            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            linux.mount("proc", os.fspath(tmp_path / "proc"), "proc", linux.MS_NOSUID | linux.MS_NODEV)
            try:
                u = resolve_user(tmp_path, "root")
                os.write(w, f"resolved uid={u.uid} home={u.home}".encode())
            except ConfigError as e:
                os.write(w, f"refused: {e.message}".encode())
        except BaseException as e:  # noqa: BLE001 - report anything to the parent
            os.write(w, f"error: {e!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert out.decode().startswith("refused: cannot read the image's /etc/passwd"), out
