"""Which code produced a number: the source digest follows the files, the commit says when it is dirty."""

from __future__ import annotations

import subprocess
from pathlib import Path

from autokernel_ci.provenance import describe, git_commit, source_digest


def test_the_digest_follows_the_source_files_and_nothing_else(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    first = source_digest(pkg)
    (pkg / "notes.txt").write_text("not code")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.cpython-311.py").write_text("junk")
    assert source_digest(pkg) == first and len(first) == 12
    (pkg / "sub" / "b.py").write_text("B = 3\n")
    assert source_digest(pkg) != first


def test_the_commit_is_marked_dirty_when_tracked_files_differ(tmp_path: Path):
    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                       check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "m.py").write_text("X = 1\n")
    git("add", "m.py")
    git("commit", "-q", "-m", "one")
    clean = git_commit(tmp_path)
    assert clean != "unknown" and not clean.endswith("+dirty")
    (tmp_path / "m.py").write_text("X = 2\n")
    assert git_commit(tmp_path) == clean + "+dirty"
    assert git_commit(tmp_path / "nowhere") == "unknown"
    assert set(describe()) == {"commit", "source_digest"}


def test_a_benchmark_record_names_the_code_and_is_written_only_where_asked(tmp_path: Path, capsys):
    from autokernel_ci.provenance import print_record, run_record, write_record

    record = run_record("cpu")
    assert {"command", "date", "device", "versions", "commit", "source_digest"} <= set(record)
    print_record(record, " (note)")
    out = capsys.readouterr().out
    assert f"(source {record['source_digest']})" in out and "(note)" in out and "NOTE: no GPU" in out
    write_record(record, None)
    assert not list(tmp_path.iterdir())
    write_record(record, tmp_path / "sub" / "r.json")
    assert (tmp_path / "sub" / "r.json").read_text().count(record["source_digest"]) == 1
