"""The docs cannot drift from the code: generated pages are current, the site builds, stated facts hold."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _text(path: Path) -> str:
    """A page with whitespace collapsed, so a fact may wrap across lines."""
    return " ".join(path.read_text(encoding="utf-8").split())


def test_generated_reference_pages_are_current():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{result.stderr}{result.stdout}"


def test_check_names_a_stale_page(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_docs
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    page = tmp_path / "cli.md"
    page.write_text("an old CLI reference\n", encoding="utf-8")
    fresh = tmp_path / "config.md"
    fresh.write_text("current\n", encoding="utf-8")
    assert gen_docs.stale_pages({page: "the new one\n", fresh: "current\n", tmp_path / "missing.md": "x"}) == [
        page,
        tmp_path / "missing.md",
    ]


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="mkdocs and mkdocs-material are not installed (pip install -e '.[docs]')",
)
@pytest.mark.e2e
def test_site_builds_strictly(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    cli_page = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "rp anonymize" in cli_page and "--manifest-paths" in cli_page
    assert 'class="mermaid"' in (site / "method" / "index.html").read_text(encoding="utf-8")


def test_quick_start_is_the_readmes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for block in blocks[:2]:
        assert block in index, f"docs/index.md lacks the README's command:\n{block}"


def test_thresholds_stated_in_the_guides_are_the_codes():
    from rp_core.plugins import PluginHost

    encoders = PluginHost().registry["identity_encoder"]
    arc, dlib = encoders["buffalo_l"].cls, encoders["dlib"].cls
    dlib_verify = dlib.verify_threshold if dlib.verify_threshold is not None else dlib.match_threshold
    facts = {
        "config.md": [
            f'for `buffalo_l` (cosine similarity) "same person" starts at {arc.match_threshold} and verification '
            f"draws its line further out, at {arc.verify_threshold}",
            f"for `dlib` (Euclidean distance, lower = same person) it is {dlib.match_threshold} and verification "
            f"draws its line at {dlib_verify}",
        ],
        "plugins.md": [
            f"`buffalo_l` {arc.match_threshold} cosine, `dlib` {dlib.match_threshold} Euclidean",
            f"(`buffalo_l`: {arc.verify_threshold})",
        ],
        "method.md": [
            f'for `buffalo_l` "same person" starts at cosine similarity {arc.match_threshold}, and verification '
            f"draws its line further out, at {arc.verify_threshold}",
        ],
    }
    for page, sentences in facts.items():
        text = _text(DOCS / page)
        for sentence in sentences:
            assert sentence in text, f"docs/{page} no longer says what the code does: {sentence!r}"


def test_defaults_stated_in_the_guides_are_the_codes():
    from rp_core.config import CoverageSection, VerifySection
    from rp_core.session import SessionOptions

    config = _text(DOCS / "config.md")
    assert f'detector = "{CoverageSection().detector}"' in config
    assert f'no_face = "{VerifySection().no_face}"' in config
    assert f'policy = "{VerifySection().policy}"' in config
    assert f"By default (`{SessionOptions.manifest_paths}`)" in _text(DOCS / "cli.md")
