"""lokr_core.base.tempfiles: the temp name pattern, stale temps found and removed, look-alikes never touched."""
import os
import subprocess
import sys
import time

from lokr_core.base import tempfiles as T


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _touch(path, data=b"x"):
    path.write_bytes(data)
    return path


def test_temp_path_pattern_names_target_and_pid(tmp_path):
    p = T.temp_path(tmp_path / "out.safetensors")
    assert p.parent == tmp_path and not p.exists()
    m = T.TEMP_RE.match(p.name)
    assert m and m.group("target") == "out.safetensors" and int(m.group("pid")) == os.getpid()
    assert p != T.temp_path(tmp_path / "out.safetensors")  # random part


def test_stale_found_and_removed_only_for_the_same_target_and_pattern(tmp_path):
    dead = _dead_pid()
    stale = _touch(tmp_path / f".out.safetensors.lokr-{dead}-0123abcd.tmp", b"partial" * 100)
    other_target = _touch(tmp_path / f".other.safetensors.lokr-{dead}-0123abcd.tmp")
    mine = _touch(tmp_path / f".out.safetensors.lokr-{os.getpid()}-0123abcd.tmp")  # this process: alive
    look_alikes = [f".out.safetensors.lokr-{dead}-0123ABCD.tmp", f".out.safetensors.lokr-{dead}-0123abc.tmp",
                   f"out.safetensors.lokr-{dead}-0123abcd.tmp", f".out.safetensors.lokr-{dead}-0123abcd.tmp.bak",
                   f".out.safetensors.{dead}-0123abcd.tmp", f".out.safetensors.lokr-x{dead}-0123abcd.tmp",
                   ".out.safetensors.abcdef.tmp", "out.safetensors", f".out.safetensors.lokr-0-0123abcd.tmp"]
    for name in look_alikes:
        _touch(tmp_path / name)
    (tmp_path / f".out.safetensors.lokr-{dead}-00000000.tmp").symlink_to(tmp_path / "out.safetensors")
    found = T.stale_temps(tmp_path)
    assert {t.path for t in found} == {stale, other_target}
    assert [t.size for t in found if t.path == stale] == [700]
    removed = T.remove_stale(tmp_path / "out.safetensors")
    assert [t.path for t in removed] == [stale]
    left = set(os.listdir(tmp_path))
    assert stale.name not in left
    assert {other_target.name, mine.name, f".out.safetensors.lokr-{dead}-00000000.tmp", *look_alikes} <= left


def test_running_writer_kept_and_reused_pid_is_stale(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        live = _touch(tmp_path / f".a.safetensors.lokr-{child.pid}-0123abcd.tmp")
        assert [t.stale for t in T.list_temps(tmp_path)] == [False]
        assert T.remove_stale(tmp_path / "a.safetensors") == [] and live.exists()
        if T.process_start(child.pid) is not None:  # /proc available: a file older than the process is stale
            old = time.time() - 3600
            os.utime(live, (old, old))
            assert T.remove_stale(tmp_path / "a.safetensors")[0].path == live and not live.exists()
    finally:
        child.kill()
        child.wait()


def test_stale_temp_folder_removed(tmp_path):
    d = tmp_path / f".merged.lokr-{_dead_pid()}-0123abcd.tmp"
    (d / "unet").mkdir(parents=True)
    _touch(d / "unet" / "x.safetensors", b"12345")
    (t,) = T.stale_temps(tmp_path, "merged")
    assert t.is_dir and t.size == 5
    T.remove_stale(tmp_path / "merged")
    assert not d.exists()
