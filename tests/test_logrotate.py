"""Run-log rotation (runner/logrotate.py) on a real directory: ages by mtime."""

from __future__ import annotations

import gzip
import os
import time

from runner.logrotate import rotate


def aged(path, text, hours):
    path.write_text(text)
    t = time.time() - hours * 3600
    os.utime(path, (t, t))


def test_old_logs_are_gzipped_keeping_their_age_and_links_follow(tmp_path):
    runs, jobs = tmp_path / "runs", tmp_path / "jobs"
    runs.mkdir(), jobs.mkdir()
    aged(runs / "a.log", "day old\n", 30)
    aged(runs / "b.log", "fresh\n", 1)
    aged(runs / "c.log", "ancient\n", 24 * 20)
    (jobs / "ja.log").symlink_to("../runs/a.log")
    (jobs / "jb.log").symlink_to("../runs/b.log")
    (jobs / "jc.log").symlink_to("../runs/c.log")
    before = (runs / "a.log").stat().st_mtime

    done = rotate(runs, jobs, gzip_after_s=24 * 3600, delete_after_s=14 * 86400)

    assert sorted(p.name for p in runs.iterdir()) == ["a.log.gz", "b.log"]
    assert gzip.decompress((runs / "a.log.gz").read_bytes()) == b"day old\n"
    assert abs((runs / "a.log.gz").stat().st_mtime - before) < 1
    assert {p.name: os.readlink(p) for p in jobs.iterdir()} == {
        "ja.log.gz": "../runs/a.log.gz", "jb.log": "../runs/b.log"}
    assert (done.gzipped, done.relinked, done.deleted, done.pruned) == (1, 1, 1, 1)
    assert done.summary().startswith("rotation: gzipped 1 run log(s)")


def test_nothing_to_do_says_nothing(tmp_path):
    (tmp_path / "runs").mkdir()
    done = rotate(tmp_path / "runs", tmp_path / "jobs", 3600, 86400)
    assert done.summary() is None
