"""Shared fixtures: real photos (t1.jpg, astronaut), a random ArcFace-shaped ONNX model, a plugin host."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

# Cap torch/OpenMP threads before anything imports torch: on a loaded 2-core CI machine more threads
# than cores make the diffusion tests many times slower, not faster.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

from helpers.stacks import FACE_STACK_PLUGINS  # noqa: E402 (after the thread caps)


def _insightface_images() -> Path:
    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations, "insightface is not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images"


@pytest.fixture(scope="session")
def t1() -> np.ndarray:
    """InsightFace's t1.jpg (1280x886, 6 people) as RGB uint8."""
    from PIL import Image

    with Image.open(_insightface_images() / "t1.jpg") as image:
        return np.asarray(image.convert("RGB")).copy()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (512x512, 1 face) as RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, :3])


def write_random_arcface(path: Path, seed: int = 0) -> Path:
    """A small random conv net with buffalo_l's recognition signature: input.1 (N, 3, 112, 112) -> (N, 512)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    initializers = [
        weight("conv1.w", 16, 3, 3, 3),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv1.b"),
        weight("conv2.w", 32, 16, 3, 3),
        numpy_helper.from_array(np.zeros(32, np.float32), "conv2.b"),
        weight("fc.w", 512, 32),
        numpy_helper.from_array(np.zeros(512, np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node(
            "Conv", ["input.1", "conv1.w", "conv1.b"], ["c1"], name="Conv_0", strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("PRelu", ["c1", "slope"], ["r1"], name="PRelu_1"),
        helper.make_node(
            "Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="Conv_2", strides=[2, 2], pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="Relu_3"),
        helper.make_node("GlobalAveragePool", ["r2"], ["pool"], name="GlobalAveragePool_4"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="Flatten_5", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["683"], name="Gemm_6", transB=1),
    ]
    initializers.append(numpy_helper.from_array(np.full((16, 1, 1), 0.25, np.float32), "slope"))
    graph = helper.make_graph(
        nodes,
        "random_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def random_buffalo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding a random `models/buffalo_l/w600k_r50.onnx` (returns the models dir)."""
    root = tmp_path_factory.mktemp("insightface")
    write_random_arcface(root / "models" / "buffalo_l" / "w600k_r50.onnx")
    return root


@pytest.fixture(scope="session")
def host():  # type: ignore[no-untyped-def]
    """A plugin host loading this face stack through its real entry points (and nothing half-written)."""
    from rp_core.plugins import PluginHost

    return PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS})


class Reidentifier:
    """An independent recognizer built straight from dlib (not through rp's plugins): HOG + 68 points + 128-d."""

    threshold = 0.6

    def __init__(self) -> None:
        import dlib

        from rp_plugins.dlib_faces import package_models_dir

        models = package_models_dir()
        assert models is not None, "face_recognition_models is not installed"
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.model = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptors(self, image: np.ndarray, upsample: int = 0) -> list[np.ndarray]:
        image = np.ascontiguousarray(image)
        return [
            np.array(self.model.compute_face_descriptor(image, self.predictor(image, rect)))
            for rect in self.detector(image, upsample)
        ]


@pytest.fixture(scope="session")
def reidentifier() -> Reidentifier:
    return Reidentifier()


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """`slow` tests need real downloaded weights (and, for the diffusion path, a GPU): opt in with RP_SLOW_TESTS=1."""
    if os.environ.get("RP_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs real downloaded weights: set RP_SLOW_TESTS=1 (after `rp models download`)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
