"""Config resolution: selection by file, precedence of sources, and every error path's message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.throwaway import throwaway_host

from rp_core.config import resolve_config
from rp_core.errors import ConfigError
from rp_core.orchestrator import Anonymizer

SELECT_TOML = """
[detector]
name = "centre"

[generator]
name = "flat"
options = { level = 11 }

[merger]
name = "box"

[verify]
enabled = false
"""

SELECT_YAML = """
detector:
  name: centre
generator:
  name: flat
  options:
    level: 11
merger:
  name: box
verify:
  enabled: false
"""


@pytest.mark.parametrize(("filename", "text"), [("run.toml", SELECT_TOML), ("run.yaml", SELECT_YAML)])
def test_throwaway_detector_selected_by_name_in_a_config_file(tmp_path: Path, filename: str, text: str) -> None:
    path = tmp_path / filename
    path.write_text(text)
    host = throwaway_host()
    config = resolve_config(host, config_file=path, environ={})
    assert config.detector.name == "centre" and config.generator.options == {"level": 11}
    image = np.zeros((80, 80, 3), np.uint8)
    image[20:60, 20:60] = 200
    result = Anonymizer(config, host).anonymize(image)
    assert result.face_count == 1 and result.records[0].detector == "centre"
    assert (result.image[35:45, 35:45] == 11).all()  # the throwaway generator's level reached the pixels


def _precedence(tmp_path: Path, *, preset: bool, file: bool, env: bool, flags: bool) -> tuple[int, int]:
    path = tmp_path / "c.toml"
    path.write_text("[generator]\nname = 'flat'\noptions = { level = 3 }\n[runtime]\nseed = 2\n")
    config = resolve_config(
        throwaway_host(),
        preset="flat9" if preset else None,
        config_file=path if file else None,
        environ={"RP_GENERATOR__OPTIONS__LEVEL": "4", "RP_RUNTIME__SEED": "3"} if env else {},
        flags={"seed": 4, "detector": "centre", "merger": "box", "generator": "flat"}
        if flags
        else {"detector": "centre", "merger": "box", "generator": "flat"},
        overrides=["generator.options.level=5"] if flags else [],
    )
    return config.generator.options.get("level", 7), config.runtime.seed


def test_precedence_defaults_preset_file_env_flags(tmp_path: Path) -> None:
    assert _precedence(tmp_path, preset=False, file=False, env=False, flags=False) == (7, 0)  # defaults
    assert _precedence(tmp_path, preset=True, file=False, env=False, flags=False) == (9, 1)  # preset
    assert _precedence(tmp_path, preset=True, file=True, env=False, flags=False) == (3, 2)  # file > preset
    assert _precedence(tmp_path, preset=True, file=True, env=True, flags=False) == (4, 3)  # env > file
    assert _precedence(tmp_path, preset=True, file=True, env=True, flags=True) == (5, 4)  # flags > env


def test_preset_can_come_from_env(tmp_path: Path) -> None:
    config = resolve_config(throwaway_host(), environ={"RP_PRESET": "flat"})
    assert config.preset == "flat" and config.detector.name == "centre"


def _error(tmp_path: Path, *, text: str | None = None, suffix: str = ".toml", **kwargs) -> str:
    kwargs.setdefault("preset", "flat")
    if text is not None:
        path = tmp_path / f"bad{suffix}"
        path.write_text(text)
        kwargs["config_file"] = path
    with pytest.raises(ConfigError) as info:
        resolve_config(throwaway_host(), environ=kwargs.pop("environ", {}), **kwargs)
    return str(info.value)


def test_unknown_section_key_names_key_value_and_allowed(tmp_path: Path) -> None:
    message = _error(tmp_path, overrides=["runtime.sed=3"])
    assert "runtime.sed" in message and "3" in message and "seed" in message and "batch_size" in message


def test_unknown_top_level_section(tmp_path: Path) -> None:
    message = _error(tmp_path, text="[generatr]\nname = 'flat'\n")
    assert "generatr" in message and "generator" in message


def test_unknown_component_option_lists_the_components_options(tmp_path: Path) -> None:
    message = _error(tmp_path, overrides=["generator.options.lvl=3"])
    assert "generator.options.lvl" in message and "unknown key" in message and "level" in message


def test_bad_type(tmp_path: Path) -> None:
    message = _error(tmp_path, environ={"RP_RUNTIME__SEED": "abc"})
    assert "runtime.seed" in message and "'abc'" in message and "integer" in message


def test_bad_range(tmp_path: Path) -> None:
    message = _error(tmp_path, overrides=["generator.options.level=300"])
    assert "generator.options.level" in message and "300" in message and "255" in message
    message = _error(tmp_path, overrides=["align.face_image_size=100"])
    assert "align.face_image_size" in message and "100" in message and "multiple of 8" in message


def test_bad_choice(tmp_path: Path) -> None:
    message = _error(tmp_path, overrides=["runtime.dtype=float8"])
    assert "runtime.dtype" in message and "float8" in message and "float16" in message


def test_unknown_component_name_lists_available(tmp_path: Path) -> None:
    message = _error(tmp_path, flags={"detector": "centr"})
    assert "detector.name" in message and "'centr'" in message and "centre" in message


def test_unknown_preset_lists_presets(tmp_path: Path) -> None:
    message = _error(tmp_path, preset="ofline")
    assert "preset" in message and "'ofline'" in message and "flat9" in message


def test_bad_set_syntax(tmp_path: Path) -> None:
    message = _error(tmp_path, overrides=["generator.options.level"])
    assert "generator.options.level" in message and "section.key=value" in message


def test_flag_no_selected_component_uses(tmp_path: Path) -> None:
    message = _error(tmp_path, flags={"det_thresh": 0.3})
    assert "--det-thresh" in message and "0.3" in message and "detector=centre" in message


def test_bad_file_extension(tmp_path: Path) -> None:
    message = _error(tmp_path, text="detector: {name: centre}\n", suffix=".json")
    assert "'.json'" in message and ".toml" in message and ".yaml" in message


def test_invalid_toml(tmp_path: Path) -> None:
    message = _error(tmp_path, text="[detector\nname = 'centre'\n")
    assert "bad.toml" in message and "not valid" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    message = _error(tmp_path, text="- just\n- a list\n", suffix=".yaml")
    assert "mapping" in message and "list" in message


def test_missing_config_file(tmp_path: Path) -> None:
    message = _error(tmp_path, config_file=tmp_path / "nope.toml")
    assert "nope.toml" in message and "does not exist" in message


def test_unknown_generator_by_flag_is_the_error_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("detector: {name: centre}\ngenerator: {name: flat, options: {level: 2}}\nmerger: {name: box}\n")
    with pytest.raises(ConfigError, match="generator.name: bad value 'pixelate'"):
        resolve_config(throwaway_host(), config_file=path, flags={"generator": "pixelate"}, environ={})


def test_a_flag_for_a_slot_the_generator_never_runs_is_an_error() -> None:
    """--guidance-scale under the offline preset would silently do nothing: the inverter is never run."""
    from rp_core.config import resolve_config
    from rp_core.errors import ConfigError
    from rp_core.plugins import PluginHost

    host = PluginHost()
    if "ledits_sdxl" not in host.registry["inverter"] or "pixelate" not in host.registry["generator"]:
        pytest.skip("needs the default plugins")
    with pytest.raises(ConfigError, match=r"--guidance-scale -5.*inverter=ledits_sdxl \(not run by this generator\)"):
        resolve_config(host, preset="offline", flags={"guidance_scale": -5.0}, environ={})
    assert resolve_config(host, flags={"guidance_scale": -5.0}, environ={}).generator.options["guidance_scale"] == -5.0


def test_options_follow_the_component_finally_chosen() -> None:
    """A component picked by flag keeps the options --set, env or a file give it; another's are dropped."""
    from rp_core.config import resolve_config
    from rp_core.errors import ConfigError
    from rp_core.plugins import PluginHost

    host = PluginHost()
    if not {"blur", "pixelate"} <= set(host.registry["generator"]):
        pytest.skip("needs the default plugins")
    config = resolve_config(
        host, preset="offline", flags={"generator": "blur"}, overrides=["generator.options.strength=0.3"], environ={}
    )
    assert config.generator.name == "blur" and config.generator.options == {"strength": 0.3}
    env = {"RP_GENERATOR__OPTIONS__BLOCKS": "3"}
    config = resolve_config(host, flags={"generator": "pixelate", "detector": "dlib"}, environ=env)
    assert config.generator.options == {"blocks": 3}
    with pytest.raises(ConfigError, match="generator.options.bogus"):
        resolve_config(host, flags={"generator": "blur"}, overrides=["generator.options.bogus=1"], environ={})
    # options a layer gives the component it names do not follow a later switch to another one
    switched = ["generator.name=pixelate", "generator.options.blocks=4"]
    config = resolve_config(host, overrides=switched, flags={"generator": "blur", "detector": "dlib"}, environ={})
    assert config.generator.name == "blur" and config.generator.options == {}
    # options given without a name belong to whichever component is finally chosen, and are checked by it
    with pytest.raises(ConfigError, match="generator.options.blocks"):
        resolve_config(
            host, preset="offline", overrides=["generator.options.blocks=4"], flags={"generator": "blur"}, environ={}
        )


def test_video_settings_come_from_a_file_flags_and_set(tmp_path: Path) -> None:
    """The `video` section: a config file, then flags (--verify-every, --lost-frames, --video-crf), then --set."""
    from rp_core.video.run import VideoOptions

    path = tmp_path / "video.toml"
    path.write_text(SELECT_TOML + '[video]\nverify_every = 4\ncrf = 30\npreset = "veryfast"\nsmooth_beta = 0.5\n')
    plain = tmp_path / "plain.toml"
    plain.write_text(SELECT_TOML)
    host = throwaway_host()
    config = resolve_config(
        host,
        config_file=path,
        flags={"lost_frames": 12, "video_crf": 23},
        overrides=["video.search_every=2"],
        environ={},
    )
    options = VideoOptions.from_config(config.video)
    assert (options.verify_every, options.search_every, options.lost_frames) == (4, 2, 12)
    assert (options.encode.crf, options.encode.preset, options.encode.codec, options.smooth_beta) == (
        23,
        "veryfast",
        "auto",
        0.5,
    )
    assert config.video.loosenings() == [
        "video verify_every=4: only 1 frame in 4 is re-checked",
        "video search_every=2: moved faces are searched for on 1 re-checked frame in 2 only (the others are checked "
        "at the face's own landmarks)",
    ]
    assert resolve_config(host, config_file=plain, environ={}).video.loosenings() == []  # default: every frame
    env = resolve_config(host, config_file=plain, environ={"RP_VIDEO__VERIFY_EVERY": "3"})
    assert env.video.verify_every == 3


@pytest.mark.parametrize(
    ("override", "words"),
    [("video.verify_every=0", "greater than or equal to 1"), ("video.crf=70", "less than or equal to 63")],
)
def test_bad_video_settings_name_the_key(tmp_path: Path, override: str, words: str) -> None:
    path = tmp_path / "select.toml"
    path.write_text(SELECT_TOML)
    with pytest.raises(ConfigError, match=override.split("=")[0]) as bad:
        resolve_config(throwaway_host(), config_file=path, overrides=[override], environ={})
    assert words in str(bad.value) and "\n" not in str(bad.value)
