"""The face-stack plugins register through their entry points and stay import-light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rp_core.interfaces import ComponentOptions


def test_components_are_registered_by_their_plugins(host) -> None:  # type: ignore[no-untyped-def]
    expected = {
        ("detector", "dlib"): "rp-dlib",
        ("detector", "sfd"): "rp-sfd",
        ("identity_encoder", "dlib"): "rp-dlib",
        ("identity_encoder", "buffalo_l"): "rp-buffalo-l",
        ("generator", "pixelate"): "rp-obfuscate",
        ("generator", "blur"): "rp-obfuscate",
        ("generator", "solid"): "rp-obfuscate",
        ("merger", "affine"): "rp-affine",
    }
    for (kind, name), plugin in expected.items():
        registration = host.get(kind, name)
        assert registration.plugin == plugin
        options = registration.cls.Options
        assert issubclass(options, ComponentOptions)
        with pytest.raises(ValueError):
            options.model_validate({"no_such_option": 1})
        assert registration.cls.__doc__ and options.__doc__


def test_plugin_modules_import_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import rp_plugins.dlib_faces, rp_plugins.sfd, rp_plugins.buffalo_l, rp_plugins.obfuscate, rp_plugins.affine_merger\n"
        "heavy = {'torch', 'cv2', 'dlib', 'onnxruntime', 'insightface', 'face_alignment', 'onnx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
