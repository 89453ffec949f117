"""devbox.watch without root: globs against git itself, rules, debounce/queueing with a fake clock, the
watcher with a fake inotify source and fake actions, and the real inotify source on a temp tree."""

from __future__ import annotations

import errno
import io
import os
import queue
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from devbox import errors, model
from devbox import watch as w

# ------------------------------------------------------------------------------------------ helpers


def write(p: Path, text: str = "x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def wait_for(cond: Any, timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


DEVBOXFILE = """\
name: wt
boxes:
  web:
    base: debian:bookworm
    services:
      app: {command: python3 -m http.server}
      worker: {command: sleep infinity}
    watch:
      - {path: ./src, include: ["*.py"], action: restart app}
      - {path: ./src, include: ["*.py"], ignore: ["tests/"], action: signal worker HUP}
      - {path: ./assets, action: sync /srv/assets}
      - {path: ./pkg/list.txt, action: rebuild}
"""


class FakeSource:
    def __init__(self, limit: int | None = None) -> None:
        self.paths: dict[int, str] = {}
        self.next = 0
        self.limit = limit
        self.started = self.stopped = False

    def start(self, q: queue.Queue[tuple[Any, ...]]) -> None:
        self.started = True

    def add(self, path: str) -> int:
        if self.limit is not None and len(self.paths) >= self.limit:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        self.next += 1
        self.paths[self.next] = path
        return self.next

    def remove(self, wd: int) -> None:
        self.paths.pop(wd, None)

    def stop(self) -> None:
        self.stopped = True

    def wd(self, path: Path | str) -> int:
        return next(k for k, v in self.paths.items() if v == os.fspath(path))


class FakeRunner:
    def __init__(self) -> None:
        self.runs: list[w.Job] = []

    def run(self, job: w.Job, ctx: w.WatchContext) -> str:
        self.runs.append(job)
        return "done"

    def interrupt(self, sig: int = 2) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def project(tmp_path: Path) -> Path:
    write(tmp_path / "Devboxfile", DEVBOXFILE)
    write(tmp_path / "src/app.py")
    write(tmp_path / "src/tests/test_app.py")
    write(tmp_path / "src/node_modules/lib/x.py")
    write(tmp_path / "src/.hg/store")
    write(tmp_path / "src/gen/out.py")
    write(tmp_path / "src/__pycache__/app.cpython-311.pyc")
    write(tmp_path / "assets/logo.svg")
    write(tmp_path / "pkg/list.txt")
    write(tmp_path / ".gitignore", "src/gen/\n")
    return tmp_path


def make_watcher(project: Path, **kw: Any) -> tuple[w.Watcher, FakeSource, list[w.Job], Clock, io.StringIO]:
    src = kw.pop("source", None) or FakeSource()
    jobs: list[w.Job] = []
    clock = Clock()
    out = io.StringIO()
    watcher = w.Watcher(
        project / "Devboxfile",
        kw.pop("boxes", None),
        runner=FakeRunner(),
        source=src,
        out=w.Reporter(out),
        clock=clock,
        start_job=jobs.append,
        **kw,
    )
    return watcher, src, jobs, clock, out


def ev(src: FakeSource, d: Path, name: str, mask: int = w.IN_CLOSE_WRITE) -> tuple[Any, ...]:
    return ("ev", src.wd(d), mask, name.encode())


# ------------------------------------------------------------------------------------------ globs


GITIGNORE_ROOT = """\
# comment
*.log
!keep.log
/build
docs/*.html
**/tmp
out/**
a/**/z
*.py[co]
[!a]x.txt
dir_only/
\\#hash
trailing   \n"""
GITIGNORE_SUB = """\
*.txt
!important.txt
/local
"""
PATHS = [
    "x.log",
    "keep.log",
    "sub/y.log",
    "sub/keep.log",
    "build/a",
    "sub/build/a",
    "docs/a.html",
    "docs/x/a.html",
    "tmp/f",
    "q/tmp/f",
    "out/a/b",
    "out",
    "a/z",
    "a/b/z",
    "a/b/c/z",
    "b/z",
    "m.pyc",
    "m.pyo",
    "m.py",
    "bx.txt",
    "ax.txt",
    "dir_only/f",
    "q/dir_only/f",
    "file_dir_only",
    "#hash",
    "trailing",
    "trailing  x",
    "sub/n.txt",
    "sub/important.txt",
    "sub/local/f",
    "sub/deeper/local/f",
    "sub/deeper/n.txt",
    "plain.c",
]


def test_gitignore_matches_git_check_ignore(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", os.fspath(repo)], check=True)
    write(repo / ".gitignore", GITIGNORE_ROOT)
    write(repo / "sub/.gitignore", GITIGNORE_SUB)
    write(repo / "file_dir_only")  # a file named like a dir-only pattern is not ignored
    write(repo / "dir_only/f")
    write(repo / "q/dir_only/f")
    r = subprocess.run(
        ["git", "-C", os.fspath(repo), "check-ignore", "--no-index", "--stdin"],
        input="\n".join(PATHS),
        capture_output=True,
        text=True,
    )
    git_says = set(r.stdout.split("\n")) - {""}
    gi = w.GitIgnore(repo)
    ours = {p for p in PATHS if gi.ignored(tuple(p.split("/")), (repo / p).is_dir())}
    assert ours == git_says
    assert "keep.log" not in ours and "x.log" in ours and "sub/important.txt" not in ours


def test_translate_edge_cases() -> None:
    p = w.compile_pattern("a/**/b")
    assert p is not None and p.anchored and p.literal == ("a",)
    assert p.matches(("a", "b"), False) and p.matches(("a", "x", "y", "b"), False)
    assert not p.matches(("x", "a", "b"), False)
    assert w.compile_pattern("# c") is None and w.compile_pattern("   ") is None
    q = w.compile_pattern("build/")
    assert q is not None and q.dir_only and not q.anchored
    assert q.matches(("x", "build"), True) and not q.matches(("x", "build"), False)


# ------------------------------------------------------------------------------------------ rules


def rule(
    tmp_path: Path, path: str, action: str = "restart", args: tuple[str, ...] = ("app",), **kw: Any
) -> w.Rule:
    r = model.WatchRule(path=tmp_path / path, action=model.WatchAction(action), args=args, **kw)
    return w.Rule("web", r, w.GitIgnore(tmp_path), tmp_path)


def test_rule_defaults_include_ignore_gitignore(project: Path) -> None:
    r = rule(project, "src", include=("*.py",), ignore=("tests/",))
    assert r.matches(os.fspath(project / "src/app.py"), False)
    assert r.matches(os.fspath(project / "src/deep/er/mod.py"), False)
    assert not r.matches(os.fspath(project / "src/readme.md"), False)  # not included
    assert not r.matches(os.fspath(project / "src/tests/test_app.py"), False)  # rule ignore
    assert not r.matches(os.fspath(project / "src/node_modules/lib/x.py"), False)  # default ignore
    assert not r.matches(os.fspath(project / "src/.git/x.py"), False)
    assert not r.matches(os.fspath(project / "src/gen/out.py"), False)  # .gitignore
    assert not r.matches(os.fspath(project / "src/.app.py.swp"), False)
    assert not r.matches(os.fspath(project / "other/app.py"), False)  # not below the rule's path
    # the folders it watches: pruned where nothing can match
    assert r.wants_dir(os.fspath(project / "src"))
    assert r.wants_dir(os.fspath(project / "src/deep"))
    for d in ("src/node_modules", "src/.git", "src/.hg", "src/gen", "src/tests", "src/__pycache__"):
        assert not r.wants_dir(os.fspath(project / d)), d


def test_rule_path_itself_and_named_by_include(project: Path) -> None:
    # a rule's own path counts even where the defaults would ignore it
    f = rule(project, "target/app.war")
    assert f.matches(os.fspath(project / "target/app.war"), False)
    assert not f.matches(os.fspath(project / "target/other.war"), False)
    assert f.top == os.fspath(project)  # target/ does not exist yet: watch from the nearest folder
    assert f.wants_dir(os.fspath(project / "target"))  # to see app.war appear
    # an include glob that names a default-ignored folder lifts the default for it
    n = rule(project, ".", include=("build/libs/*.jar",))
    assert n.matches(os.fspath(project / "build/libs/a.jar"), False)
    assert n.wants_dir(os.fspath(project / "build")) and n.wants_dir(os.fspath(project / "build/libs"))
    assert not n.wants_dir(os.fspath(project / "src"))  # no include glob can reach it
    assert not n.matches(os.fspath(project / "x/build/libs/a.jar"), False)


# ------------------------------------------------------------------------------------------ scheduler

K1 = w.ActionKey("web", "restart", ("app",))
K2 = w.ActionKey("web", "signal", ("worker", "HUP"))
K3 = w.ActionKey("db", "restart", ("db",))


def test_burst_is_one_job() -> None:
    s = w.Scheduler(quiet=0.1, max_delay=3.0)
    t = 0.0
    for i in range(1000):  # a checkout: 1,000 files, 1 ms apart
        s.touch(K1, f"/p/f{i}", t)
        t += 0.001
        assert s.due(t) == []
    assert s.next_deadline() == pytest.approx(t - 0.001 + 0.1)
    jobs = s.due(t + 0.1)
    assert len(jobs) == 1 and len(jobs[0].paths) == 1000
    assert s.due(t + 5) == []


def test_max_delay_bounds_a_steady_writer() -> None:
    s = w.Scheduler(quiet=0.1, max_delay=1.0)
    for i in range(20):  # a change every 50 ms: never 100 ms of quiet
        s.touch(K1, "/p/log", i * 0.05)
        assert s.due(i * 0.05 + 0.04) == []
    assert len(s.due(1.0)) == 1


def test_never_twice_at_once_and_one_follow_up() -> None:
    s = w.Scheduler(quiet=0.1)
    s.touch(K1, "/p/a", 0.0)
    (job,) = s.due(0.2)
    for i in range(50):  # edits while it runs
        s.touch(K1, f"/p/b{i}", 0.3 + i * 0.01)
    assert s.due(5.0) == []  # still running: no second copy
    assert s.next_deadline() is None
    s.finished(K1)
    (follow,) = s.due(5.0)
    assert len(follow.paths) == 50
    s.finished(K1)
    assert s.due(10.0) == [] and s.idle()


def test_one_box_at_a_time_other_boxes_in_parallel() -> None:
    s = w.Scheduler(quiet=0.1)
    for k in (K1, K2, K3):
        s.touch(k, "/p/a", 0.0)
    first = {j.key for j in s.due(1.0)}
    assert first == {K1, K3} or first == {K2, K3}
    assert s.due(2.0) == []
    s.finished(next(iter(first - {K3})))
    assert {j.key for j in s.due(2.0)} == {K1, K2} - first


def test_reload_waits_for_everything_and_holds_back_the_rest() -> None:
    s = w.Scheduler(quiet=0.1)
    s.touch(K3, "/p/a", 0.0)
    (j3,) = s.due(0.5)
    s.touch(w.RELOAD_KEY, "/p/Devboxfile", 1.0)
    s.touch(K1, "/p/b", 1.0)
    assert s.due(2.0) == []  # reload waits for db's restart; web's restart waits behind the reload
    s.finished(K3)
    (r,) = s.due(2.0)
    assert r.key == w.RELOAD_KEY
    assert s.due(3.0) == []
    s.finished(w.RELOAD_KEY)
    assert [j.key for j in s.due(3.0)] == [K1]


# ------------------------------------------------------------------------------------------ watcher


def test_start_watches_only_what_rules_can_match(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    watched = {os.path.relpath(p, project) for p in src.paths.values()}
    # src/tests: the restart rule wants it (only the signal rule ignores it); src/gen: .gitignore
    assert watched == {".", "src", "src/tests", "assets", "pkg"}
    # the sync rule copies everything once at start
    watcher.dispatch(clock.t + 1)
    assert [j.key.action for j in jobs] == ["sync"] and jobs[0].full
    assert "watching 5 folder(s)" in out.getvalue()


def test_events_trigger_the_right_rules(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    watcher.dispatch(clock.t + 1)
    jobs.clear()
    watcher.sched.finished(next(iter(watcher.sched.running())))
    now = clock.t + 2
    watcher.handle(ev(src, project / "src", "app.py"), now)
    watcher.handle(ev(src, project / "src", "README.md"), now)
    watcher.handle(ev(src, project, "unrelated.txt"), now)
    watcher.dispatch(now + 0.05)
    assert jobs == []  # debouncing
    watcher.dispatch(now + 0.2)
    assert sorted(j.key.action for j in jobs) == ["restart"]  # one box at a time: signal waits
    watcher.sched.finished(jobs[0].key)
    watcher.dispatch(now + 0.3)
    assert sorted(j.key.action for j in jobs) == ["restart", "signal"]
    assert "web: restart app (app.py changed)" in out.getvalue()


def test_new_folder_is_watched_and_its_files_reported(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    write(project / "src/pkg/sub/mod.py")
    write(project / "src/pkg/node_modules/n.py")
    now = clock.t + 2
    watcher.handle(ev(src, project / "src", "pkg", w.IN_CREATE | w.IN_ISDIR), now)
    watched = {os.path.relpath(p, project) for p in src.paths.values()}
    assert {"src/pkg", "src/pkg/sub"} <= watched and "src/pkg/node_modules" not in watched
    slot = watcher.sched.slots[w.ActionKey("web", "restart", ("app",))]
    assert os.fspath(project / "src/pkg/sub/mod.py") in slot.paths
    assert not any("node_modules" in p for p in slot.paths)
    # the folder goes away: its watches go too
    watcher.handle(ev(src, project / "src", "pkg", w.IN_DELETE | w.IN_ISDIR), now)
    assert not any("src/pkg" in p for p in src.paths.values())


def test_ignored_paths_do_nothing(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    watcher.sched.slots.clear()
    now = clock.t + 2
    for name in ("x.pyc", ".app.py.swp", "notes.md"):
        watcher.handle(ev(src, project / "src", name), now)
    watcher.handle(ev(src, project / "src", "node_modules", w.IN_CREATE | w.IN_ISDIR), now)
    watcher.dispatch(now + 10)
    assert jobs == [] and watcher.sched.idle()


def test_devboxfile_edit_reloads_rules(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    watcher.sched.slots.clear()
    text = DEVBOXFILE.replace(
        "- {path: ./pkg/list.txt, action: rebuild}", "- {path: ./docs, action: restart worker}"
    )
    write(project / "docs/index.md")
    write(project / "Devboxfile", text)
    now = clock.t + 2
    watcher.handle(ev(src, project, "Devboxfile"), now)
    watcher.dispatch(now + 1)
    assert [j.key for j in jobs] == [w.RELOAD_KEY]
    assert os.fspath(project / "docs") in src.paths.values()
    assert os.fspath(project / "pkg") not in src.paths.values()
    watcher.sched.finished(w.RELOAD_KEY)
    # a broken edit keeps the previous rules and says why
    write(project / "Devboxfile", text.replace("boxes:", "boxs:"))
    watcher.handle(ev(src, project, "Devboxfile"), now + 2)
    watcher.dispatch(now + 3)
    assert len(jobs) == 1 and "keeping the previous rules" in out.getvalue()
    # saving without a change does nothing
    write(project / "Devboxfile", text)
    watcher.file_digest = ""
    watcher.handle(ev(src, project, "Devboxfile"), now + 4)
    watcher.dispatch(now + 5)
    assert len(jobs) == 2


def test_gitignore_edit_rescans(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    assert os.fspath(project / "src/gen") not in src.paths.values()
    write(project / ".gitignore", "")
    watcher.handle(ev(src, project, ".gitignore"), clock.t + 1)
    watcher.dispatch(clock.t + 1)
    assert os.fspath(project / "src/gen") in src.paths.values()


def test_watch_limit_names_the_sysctl(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project, source=FakeSource(limit=2))
    with pytest.raises(w.WatchLimit) as ei:
        watcher.start()
    assert "fs.inotify.max_user_watches" in ei.value.message and "sysctl" in (ei.value.hint or "")
    assert src.stopped
    e = w.watch_limit_error(OSError(errno.EMFILE, "inotify instance limit reached"), 0)
    assert "fs.inotify.max_user_instances" in e.message


def test_failed_action_is_shown_and_watching_goes_on(project: Path) -> None:
    class Failing(FakeRunner):
        def run(self, job: w.Job, ctx: w.WatchContext) -> str:
            super().run(job, ctx)
            if len(self.runs) == 1:
                raise errors.ServiceError("BAD_NAME: app")
            return "ok"

    out = io.StringIO()
    runner = Failing()
    watcher = w.Watcher(
        project / "Devboxfile", ["web"], runner=runner, source=FakeSource(), out=w.Reporter(out)
    )
    watcher.start()
    watcher.sched.slots.clear()
    src = watcher.source
    assert isinstance(src, FakeSource)
    for n in (1, 2):
        watcher.handle(ev(src, project / "src", "app.py"), time.monotonic())
        # real worker threads: wait on the outcome, bounded by a deadline
        wait_for(
            lambda n=n: watcher.step(0.05) or (len(runner.runs) >= n and watcher.sched.idle()),
            what="the action to finish",
        )
    text = out.getvalue()
    assert "web: restart app: FAILED" in text and "BAD_NAME: app" in text
    assert "web: restart app: ok" in text


def test_sync_tar_never_follows_host_symlinks(project: Path, tmp_path: Path) -> None:
    secret = write(tmp_path.parent / f"{tmp_path.name}-secret", "s3cret")
    os.symlink(secret, project / "assets/link")
    write(project / "assets/node_modules/x.js")
    r = rule(project, "assets", "sync", ("/srv/assets",))
    buf = io.BytesIO()
    n, deleted = w.build_sync_tar(r, [], True, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert set(members) == {"logo.svg", "link"} and n == 2
    assert members["link"].issym() and members["link"].linkname == os.fspath(secret)
    buf2 = io.BytesIO()
    _, deleted = w.build_sync_tar(r, [os.fspath(project / "assets/gone.svg")], False, buf2)
    assert deleted == ["gone.svg"]


# ------------------------------------------------------------------------------------------ real inotify


def test_real_inotify_source(tmp_path: Path) -> None:
    q: queue.Queue[tuple[Any, ...]] = queue.Queue()
    s = w.InotifySource()
    s.start(q)
    try:
        wd = s.add(os.fspath(tmp_path))
        write(tmp_path / "a.py")
        (tmp_path / "d").mkdir()
        seen: list[tuple[Any, ...]] = []

        def got() -> bool:
            while not q.empty():
                seen.append(q.get_nowait())
            names = {
                (i[3], bool(i[2] & w.IN_CLOSE_WRITE), bool(i[2] & w.IN_ISDIR)) for i in seen if i[0] == "ev"
            }
            return (b"a.py", True, False) in names and any(n == b"d" and d for n, _, d in names)

        wait_for(got, what="inotify events")
        assert all(i[1] == wd for i in seen if i[0] == "ev")
    finally:
        s.stop()


def test_git_checkout_of_1000_files_is_one_action_per_rule(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    write(proj / "Devboxfile", DEVBOXFILE)
    for i in range(1000):
        write(proj / f"src/m{i // 100}/f{i}.py", "a\n")
    write(proj / "assets/logo.svg")

    def git(*a: str) -> None:
        subprocess.run(
            ["git", "-C", os.fspath(proj), "-c", "user.email=t@t", "-c", "user.name=t", *a],
            check=True,
            capture_output=True,
        )

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", "a")
    git("checkout", "-q", "-b", "other")
    for i in range(1000):
        (proj / f"src/m{i // 100}/f{i}.py").write_text("b\n")
    git("commit", "-q", "-am", "b")
    runner = FakeRunner()
    seen: list[str] = []

    class Recording(w.Watcher):
        def changed(self, path: str, is_dir: bool, now: float) -> None:
            seen.append(path)
            super().changed(path, is_dir, now)

    watcher = Recording(proj / "Devboxfile", None, runner=runner, out=w.Reporter(io.StringIO()))
    watcher.start()
    try:
        wait_for(lambda: watcher.step(0.05) or watcher.sched.idle(), what="the initial sync")
        runner.runs.clear()
        git("checkout", "-q", "main")
        # inotify keeps order: once this file's event is through and the scheduler is idle, every event
        # of the checkout has been handled and every action it caused has run
        sentinel = write(proj / "sentinel.txt")
        wait_for(lambda: watcher.step(0.05) or (os.fspath(sentinel) in seen and watcher.sched.idle()),
                 what="the checkout's actions")  # fmt: skip
        actions = sorted(j.key.action for j in runner.runs)
        assert actions == ["restart", "signal"], actions
        assert all(len(j.paths) == 1000 for j in runner.runs)
    finally:
        watcher.source.stop()


def test_limit_hit_later_is_reported_and_watching_goes_on(project: Path) -> None:
    src = FakeSource()
    watcher, src, jobs, clock, out = make_watcher(project, source=src)
    watcher.start()
    src.limit = len(src.paths)
    write(project / "src/newpkg/m.py")
    watcher.handle(ev(src, project / "src", "newpkg", w.IN_CREATE | w.IN_ISDIR), clock.t + 1)
    assert "error: the inotify watch limit is reached" in out.getvalue()
    assert "sudo sysctl fs.inotify.max_user_watches=" in out.getvalue()
    watcher.handle(ev(src, project / "src", "app.py"), clock.t + 1)  # still working
    assert watcher.sched.slots[w.ActionKey("web", "restart", ("app",))].pending


def _userns_ok() -> bool:
    return subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _userns_ok(), reason="needs `unshare -U -r` (user namespaces)")
@pytest.mark.parametrize(
    "limit,sysctl",
    [
        ("max_inotify_watches", "fs.inotify.max_user_watches"),
        ("max_inotify_instances", "fs.inotify.max_user_instances"),
    ],
)
def test_real_kernel_limits_are_named(project: Path, limit: str, sysctl: str) -> None:
    """`devbox watch` in a user namespace whose own inotify limit is tiny (the host's is untouched)."""
    for i in range(30):
        (project / f"src/p{i}").mkdir()
    value = 0 if limit == "max_inotify_instances" else 5
    repo = Path(__file__).resolve().parents[2]
    script = f"echo {value} > /proc/sys/user/{limit} && exec {repo}/.venv/bin/devbox watch --file Devboxfile"
    r = subprocess.run(
        ["unshare", "-U", "-r", "/bin/sh", "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 125, r.stderr
    assert sysctl in r.stderr and "sudo sysctl" in r.stderr, r.stderr


def test_a_rule_path_that_appears_later(tmp_path: Path) -> None:
    text = DEVBOXFILE.replace("- {path: ./pkg/list.txt, action: rebuild}",
                              "- {path: ./target/app.war, action: restart worker}")  # fmt: skip
    write(tmp_path / "Devboxfile", text)
    watcher, src, jobs, clock, out = make_watcher(tmp_path)
    watcher.start()
    watcher.sched.slots.clear()
    now = clock.t + 1
    write(tmp_path / "target/classes/A.class")
    watcher.handle(ev(src, tmp_path, "target", w.IN_CREATE | w.IN_ISDIR), now)
    assert os.fspath(tmp_path / "target") in src.paths.values()
    assert os.fspath(tmp_path / "target/classes") not in src.paths.values()  # ignored by default
    write(tmp_path / "target/app.war")
    watcher.handle(ev(src, tmp_path / "target", "app.war"), now)
    watcher.dispatch(now + 1)
    assert [j.key for j in jobs] == [w.ActionKey("web", "restart", ("worker",))]


def test_queue_overflow_rescans_and_runs_every_rule(project: Path) -> None:
    watcher, src, jobs, clock, out = make_watcher(project)
    watcher.start()
    watcher.sched.slots.clear()
    (project / "src/late").mkdir()  # made while events were lost
    watcher.handle(("overflow",), clock.t + 1)
    assert os.fspath(project / "src/late") in src.paths.values()
    assert "fs.inotify.max_queued_events" in out.getvalue()
    watcher.dispatch(clock.t + 10)
    watcher.dispatch(clock.t + 10)
    keys = {k.action for k in watcher.sched.slots}
    assert {"restart", "signal", "sync", "rebuild"} <= keys
    assert all(j.full or j.key == w.RELOAD_KEY for j in jobs)
