"""The suite's report says which results an earlier run computed (cache hits are counted)."""

from __future__ import annotations

from benchmarks import bench_ood


def test_cache_hits_are_counted_and_named_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_ood, "CACHE_HITS", {"tv": 0, "invdiff": 0})
    path, calls = str(tmp_path / "cache.json"), []

    def compute():
        calls.append(1)
        return [1.5]

    assert bench_ood._cached(path, "k", compute, "tv") == [1.5]  # computed and stored
    assert bench_ood._cached(path, "k", compute, "tv") == [1.5]  # read back
    assert len(calls) == 1 and bench_ood.CACHE_HITS == {"tv": 1, "invdiff": 0}
    report = {
        "args": {"tv_cache": path, "invdiff_cache": path},
        "cache_hits": {"tv": 1, "invdiff": 0},
    }
    note = bench_ood.cache_note(report)
    assert "FISTA-TV" in note and "invdiff" not in note and "times" not in note
    report["cache_hits"] = {"tv": 0, "invdiff": 0}  # caches given but never hit: nothing to say
    assert bench_ood.cache_note(report) == ""
    del report["cache_hits"]  # an older report: a cache given counts as read
    assert "invdiff" in bench_ood.cache_note(report) and "times" in bench_ood.cache_note(report)
