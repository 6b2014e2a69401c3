"""Input plans leave no identifiable original behind without saying so.

Hidden files and folders are processed (thumbnail folders show faces). With --in-place a symlink is
skipped and reported (replacing the link would leave its target, the real photo, as it was) unless
symlinks are followed, and then each real file is one job. With -o, symlinks are read through, and a
loop is reported instead of walked forever. Every skipped path comes with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rp_core.errors import InputError
from rp_core.io import Skipped, UsageError, plan_in_place, plan_inputs, write_image


def _touch(path: Path, content: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _tree(root: Path) -> Path:
    """photos/ with a hidden thumbnail folder, a hidden file, a GIF, a text file, and links of each kind."""
    for rel in ("a.jpg", "sub/b.png", ".thumbs/a_small.jpg", ".c.jpg", "anim.gif", "notes.txt"):
        _touch(root / "photos" / rel)
    _touch(root / "elsewhere" / "d.jpg")
    _touch(root / "elsewhere" / "deeper" / "e.jpg")
    (root / "photos" / "link.jpg").symlink_to(root / "elsewhere" / "d.jpg")
    (root / "photos" / "again.jpg").symlink_to(root / "photos" / "a.jpg")
    (root / "photos" / "linked").symlink_to(root / "elsewhere", target_is_directory=True)
    (root / "photos" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    return root / "photos"


def _reasons(skipped: tuple[Skipped, ...], root: Path) -> dict[str, str]:
    return {str(s.path.relative_to(root)): s.reason for s in skipped}


def test_in_place_skips_and_reports_symlinks_and_processes_hidden_files(tmp_path: Path) -> None:
    photos = _tree(tmp_path)
    plan = plan_in_place([photos])
    assert sorted(str(j.source.relative_to(photos)) for j in plan.jobs) == [
        ".c.jpg",
        ".thumbs/a_small.jpg",
        "a.jpg",
        "sub/b.png",
    ]
    assert all(j.source == j.target for j in plan.jobs)
    assert _reasons(plan.skipped, photos) == {
        "again.jpg": "symlink to a processed file",  # its target a.jpg is anonymized anyway
        "anim.gif": "unsupported format",
        "dangling.jpg": "broken symlink",
        "link.jpg": "symlink",
        "linked": "symlinked folder",
        "notes.txt": "unsupported format",
    }
    # what may still show a face: the linked photo, the linked folder, the GIF; not the text file
    assert sorted(s.path.name for s in plan.may_hold_faces) == ["anim.gif", "link.jpg", "linked"]
    assert [p.name for p in plan.ignored] == ["anim.gif", "notes.txt"]


def test_in_place_following_symlinks_processes_each_real_file_once(tmp_path: Path) -> None:
    photos = _tree(tmp_path)
    plan = plan_in_place([photos, photos / "link.jpg"], follow_symlinks=True)
    sources = [j.source for j in plan.jobs]
    assert len(sources) == len({s.resolve() for s in sources})  # each real file once
    real = {s.resolve() for s in sources}
    assert real == {(photos / rel).resolve() for rel in (".c.jpg", ".thumbs/a_small.jpg", "a.jpg", "sub/b.png")} | {
        (tmp_path / "elsewhere" / rel).resolve() for rel in ("d.jpg", "deeper/e.jpg")
    }
    # a followed link to a file is replaced at its target, the real photo, not at the link
    assert (tmp_path / "elsewhere" / "d.jpg").resolve() in sources
    assert not any(j.target.is_symlink() for j in plan.jobs)
    assert _reasons(plan.skipped, photos) == {
        "anim.gif": "unsupported format",
        "dangling.jpg": "broken symlink",
        "notes.txt": "unsupported format",
    }


def test_in_place_symlink_given_by_name_is_skipped_unless_followed(tmp_path: Path) -> None:
    photos = _tree(tmp_path)
    plan = plan_in_place([photos / "link.jpg"])
    assert plan.jobs == () and [(s.path.name, s.reason) for s in plan.skipped] == [("link.jpg", "symlink")]
    assert plan.may_hold_faces == plan.skipped
    followed = plan_in_place([photos / "link.jpg"], follow_symlinks=True)
    assert [j.source for j in followed.jobs] == [(tmp_path / "elsewhere" / "d.jpg").resolve()]
    folder = plan_in_place([photos / "linked"])
    assert folder.jobs == () and [s.reason for s in folder.skipped] == ["symlinked folder"]


def test_in_place_names_files_whose_original_stays_under_another_hard_link(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    shared, both_inside, single = _touch(folder / "a.jpg"), _touch(folder / "b.jpg"), _touch(folder / "c.jpg")
    os.link(shared, _touch(tmp_path / "backup" / "x").parent / "a_copy.jpg")  # outside the run: keeps the face
    os.link(both_inside, folder / "b_again.jpg")  # both names are replaced by the run
    plan = plan_in_place([folder])
    assert sorted(j.source.name for j in plan.jobs) == ["a.jpg", "b.jpg", "b_again.jpg", "c.jpg"]
    assert plan.linked_elsewhere == (shared,) and single not in plan.linked_elsewhere


def test_in_place_does_not_report_its_own_manifest_and_journal(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _touch(folder / "a.jpg")
    _touch(folder / "rp-manifest.json", b"{}")
    _touch(folder / ".rp-manifest.json.journal", b"")
    plan = plan_in_place([folder])
    assert [j.source.name for j in plan.jobs] == ["a.jpg"] and plan.skipped == ()


def test_output_run_reads_through_symlinks_and_hidden_folders(tmp_path: Path) -> None:
    photos = _tree(tmp_path)
    out = tmp_path / "out"
    plan = plan_inputs([photos], out)
    targets = sorted(str(j.target.relative_to(out)) for j in plan.jobs)
    assert targets == [
        ".c.jpg",
        ".thumbs/a_small.jpg",
        "a.jpg",
        "again.jpg",
        "link.jpg",
        "linked/d.jpg",
        "linked/deeper/e.jpg",
        "sub/b.png",
    ]  # outputs mirror the tree as the user sees it
    assert _reasons(plan.skipped, photos) == {
        "anim.gif": "unsupported format",
        "dangling.jpg": "broken symlink",
        "notes.txt": "unsupported format",
    }


def test_symlink_loops_are_reported_not_walked(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _touch(root / "inner" / "a.jpg")
    (root / "inner" / "up").symlink_to(root, target_is_directory=True)  # photos/inner/up -> photos
    plan = plan_inputs([root], tmp_path / "out")
    assert [str(j.target.relative_to(tmp_path / "out")) for j in plan.jobs] == ["inner/a.jpg"]
    assert _reasons(plan.skipped, root) == {"inner/up": "symlink loop"}
    assert not plan.skipped[0].may_hold_faces  # its files are processed through the real path
    followed = plan_in_place([root], follow_symlinks=True)
    assert [j.source.name for j in followed.jobs] == ["a.jpg"]


def test_special_files_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    _touch(folder / "a.jpg")
    os.mkfifo(folder / "pipe.jpg")  # reading it would hang the run
    plan = plan_inputs([folder], tmp_path / "out")
    assert [j.source.name for j in plan.jobs] == ["a.jpg"]
    assert [(s.path.name, s.reason, s.may_hold_faces) for s in plan.skipped] == [
        ("pipe.jpg", "not a regular file", True)
    ]


_UNPRIVILEGED = textwrap.dedent(
    """
    import json, os, sys
    import rp_core.manifest  # imported first (plan_in_place needs it): nobody may not read the installed Python
    from rp_core.io import plan_in_place
    os.setgid(65534)
    os.setuid(65534)
    plan = plan_in_place([sys.argv[1]])
    print(json.dumps({"jobs": [j.source.name for j in plan.jobs],
                      "skipped": [[s.path.name, s.reason] for s in plan.skipped]}))
    """
)


@pytest.mark.skipif(not hasattr(os, "setuid"), reason="POSIX only")
def test_unreadable_files_and_folders_are_reported(tmp_path: Path) -> None:
    import json
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="rp-unreadable-"))
    try:
        os.chmod(base, 0o755)
        folder = base / "photos"
        _touch(folder / "a.jpg")
        _touch(folder / "locked.jpg")
        _touch(folder / "private" / "b.jpg")
        os.chmod(folder, 0o755)
        os.chmod(folder / "a.jpg", 0o644)
        os.chmod(folder / "locked.jpg", 0o000)
        os.chmod(folder / "private", 0o700)
        if os.geteuid() != 0:  # an ordinary user meets the permissions directly
            plan = plan_in_place([folder])
            found = {
                "jobs": [j.source.name for j in plan.jobs],
                "skipped": [[s.path.name, s.reason] for s in plan.skipped],
            }
        else:  # root reads everything: plan as the unprivileged user "nobody" in a child process
            project = Path(__file__).resolve().parents[1]
            done = subprocess.run(
                [sys.executable, "-c", _UNPRIVILEGED, str(folder)],
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(project), "PYTHONDONTWRITEBYTECODE": "1"},
                cwd="/",
                timeout=120,
            )
            assert done.returncode == 0, done.stderr
            found = json.loads(done.stdout.strip().splitlines()[-1])
        assert found == {
            "jobs": ["a.jpg"],
            "skipped": [["locked.jpg", "not readable"], ["private", "folder not readable"]],
        }
        assert Skipped(folder / "private", "folder not readable").may_hold_faces  # a closed folder may hold faces
        assert Skipped(folder / "locked.jpg", "not readable").may_hold_faces
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


# -- usage mistakes -------------------------------------------------------------------------------


def test_unsupported_output_extension_and_stdout_are_usage_errors(tmp_path: Path) -> None:
    photo = _touch(tmp_path / "a.jpg")
    with pytest.raises(UsageError, match=r"\.gif") as info:
        plan_inputs([photo], tmp_path / "out.gif")
    assert info.value.exit_code == 2
    with pytest.raises(UsageError, match="standard output"):
        plan_inputs([photo], "-")
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    with pytest.raises(UsageError, match=r"\.gif"):  # named explicitly, it cannot be written back as GIF
        plan_in_place([_touch(tmp_path / "anim.gif")])
    with pytest.raises(InputError, match="broken symlink"):
        (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
        plan_inputs([tmp_path / "gone.jpg"], tmp_path / "out")


@pytest.mark.parametrize("output", ["out.gif", "-"])
def test_cli_exits_2_for_an_output_it_cannot_write(
    tmp_path: Path, output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rp_core.cli import create_cli

    # only this package's plugins: another plugin installed in the environment must not decide the exit code
    monkeypatch.setenv("RP_PLUGINS", "rp-dlib,rp-sfd,rp-centerface,rp-buffalo-l,rp-obfuscate,rp-affine,rp-presets")
    photo = write_image(tmp_path / "a.png", np.full((16, 16, 3), 90, np.uint8))
    result = CliRunner().invoke(
        create_cli(), ["anonymize", str(photo), "-o", output, "--preset", "offline"], catch_exceptions=False
    )
    assert result.exit_code == 2, result.output
    assert ".gif" in result.output if output == "out.gif" else "standard output" in result.output
    assert not Path("-").exists() and not (tmp_path / "out.gif").exists()
