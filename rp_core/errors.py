"""Expected failures, each with a message a user can act on (the CLI prints no traceback)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rp_core.models import ModelFile


class RpError(Exception):
    """Base of every expected error; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(RpError):
    """A config key has a bad value; the message names key, value and what is allowed."""

    exit_code = 2


class PluginError(RpError):
    """A plugin could not be loaded, or two plugins claim the same component name."""

    exit_code = 2


class MissingModelsError(RpError):
    """Model files are missing and could not be fetched."""

    exit_code = 3

    def __init__(self, files: Sequence[ModelFile], notes: Sequence[str] = ()) -> None:
        # the inverter and the generator share SDXL: name each missing file once
        unique: dict[tuple[str, tuple[str, ...]], ModelFile] = {}
        for f in files:
            unique.setdefault((f.description, tuple(str(p) for p in f.looked_in)), f)
        self.files = list(unique.values())
        lines = ["Missing model files:"]
        for f in self.files:
            lines.append(f"  - {f.component}: {f.description}")
            looked = ", ".join(str(p) for p in f.looked_in) or "(nowhere)"
            lines.append(f"      looked in: {looked}")
            lines.append(f"      get it:    {f.how_to_get}")
        lines += [f"  ({note})" for note in notes]  # why they were not downloaded
        lines.append("Run `rp doctor` for the full picture, `rp models download` with network access.")
        super().__init__("\n".join(lines))


class InputError(RpError):
    """An input file cannot be read as an image."""

    exit_code = 4


class VerificationError(RpError):
    """An anonymized face still matches its original identity and the policy allows no fix: nothing is written."""

    exit_code = 5


class DeviceError(RpError):
    """The requested device or precision cannot run this component."""

    exit_code = 2
