"""Third-party chatter stays off the console unless --verbose (rp_core.quiet)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rp_core.quiet import set_library_verbosity


def test_quiet_by_default_verbose_on_request_and_the_users_own_setting_wins() -> None:
    quiet: dict[str, str] = {}
    set_library_verbosity(False, quiet)
    assert quiet["TRANSFORMERS_VERBOSITY"] == "error" and quiet["DIFFUSERS_VERBOSITY"] == "error"
    talkative: dict[str, str] = {}
    set_library_verbosity(True, talkative)
    assert talkative["DIFFUSERS_VERBOSITY"] == "info"
    mine = {"TRANSFORMERS_VERBOSITY": "debug"}
    set_library_verbosity(False, mine)
    assert mine["TRANSFORMERS_VERBOSITY"] == "debug"


@pytest.mark.e2e
def test_the_libraries_read_it_when_imported() -> None:
    """The real transformers and diffusers, imported after the CLI set their verbosity, log errors only."""
    pytest.importorskip("diffusers")
    code = (
        "import logging, os\n"
        "for key in ('TRANSFORMERS_VERBOSITY', 'DIFFUSERS_VERBOSITY'): os.environ.pop(key, None)\n"
        "from rp_core.quiet import set_library_verbosity\n"
        "set_library_verbosity(False)\n"
        "from transformers.utils import logging as t\n"
        "from diffusers.utils import logging as d\n"
        "print(t.get_verbosity() == logging.ERROR, d.get_verbosity() == logging.ERROR)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]
