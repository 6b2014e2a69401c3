"""The installed-distributions map diffusers and transformers ask for at import: computed once, then read from disk."""

from __future__ import annotations

import importlib.metadata as metadata
import os
from pathlib import Path

from rp_plugins.diffusion.distributions import installed_fingerprint, remembered, scan_distributions_once


def test_the_kept_map_is_the_standard_librarys_and_a_later_process_reads_it_without_a_scan(tmp_path: Path) -> None:
    truth = metadata.packages_distributions()
    first = remembered(metadata.packages_distributions, tmp_path)()
    assert first == truth and list(first) == list(truth)  # the very answer (and order) a fresh scan gives
    assert len(list(tmp_path.glob("distributions-*.json"))) == 1

    def no_scan() -> dict[str, list[str]]:
        raise AssertionError("scanned again although the same packages are installed")

    again = remembered(no_scan, tmp_path)()  # the cause of the speed: read back, not walked again
    assert again == truth and list(again) == list(truth)


def test_within_a_process_the_second_caller_reuses_the_first_answer() -> None:
    calls: list[int] = []

    def scan() -> dict[str, list[str]]:
        calls.append(1)
        return {"numpy": ["numpy"]}

    packages = remembered(scan, None)
    assert packages() == packages() == {"numpy": ["numpy"]}
    assert calls == [1]


def test_installing_upgrading_or_reinstalling_a_package_changes_the_fingerprint(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    empty = installed_fingerprint([str(site)])
    (site / "demo-1.0.dist-info").mkdir()
    installed = installed_fingerprint([str(site)])
    (site / "demo-1.0.dist-info").rename(site / "demo-1.1.dist-info")
    upgraded = installed_fingerprint([str(site)])
    os.utime(site / "demo-1.1.dist-info", ns=(1, 1))  # the same version written again
    reinstalled = installed_fingerprint([str(site)])
    assert len({empty, installed, upgraded, reinstalled}) == 4
    assert installed_fingerprint([str(tmp_path / "missing"), str(site)]) == reinstalled  # a missing path adds nothing
    archive = tmp_path / "packages.zip"  # a zip on the path: its modification time stands for its contents
    archive.write_bytes(b"PK")
    zipped = installed_fingerprint([str(archive)])
    os.utime(archive, ns=(2, 2))
    assert installed_fingerprint([str(archive)]) != zipped


def test_an_unreadable_kept_map_is_computed_again_and_the_function_is_restored(tmp_path: Path) -> None:
    (tmp_path / f"distributions-{installed_fingerprint()}.json").write_text("{not json")
    original = metadata.packages_distributions
    with scan_distributions_once(tmp_path):
        assert metadata.packages_distributions is not original
        assert metadata.packages_distributions() == original()
    assert metadata.packages_distributions is original


def test_a_cache_folder_that_cannot_be_written_keeps_nothing_and_still_answers(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert remembered(lambda: {"a": ["b"]}, blocked / "cache")() == {"a": ["b"]}
