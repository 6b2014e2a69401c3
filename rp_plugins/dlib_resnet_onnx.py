"""dlib's face-recognition ResNet as an ONNX graph, built from the .dat file dlib itself loads.

dlib-bin's wheels are built without BLAS, so dlib's descriptor takes ~80 ms a face on a CPU: in the offline
preset, much of a fail-closed check's time. onnxruntime runs the same network with the same weights, read
from the same file, in a few milliseconds, and its descriptors equal dlib's to float rounding
(tests/test_dlib_resnet_onnx.py). Only the network moves: dlib still cuts the 150-px chip a face is read from.

The network is `anet_type` of dlib's dnn_face_recognition_ex.cpp: a 7x7 convolution and a max pool, then
residual stages of 3x3 convolutions (32, 64, 128, 256 and 256 filters), a global average pool and a 256x128
product. The .dat stores it in dlib's serialization; its three kinds of layers with weights (`con_4`,
`affine_`, `fc_2`) are read in file order (the input side first), each checked against that architecture, so
any other file is refused rather than misread. Each affine layer is folded into the convolution before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rp_core.errors import RpError
from rp_core.models import digest

#: Bumped whenever the graph built here changes, so no process loads an older conversion from the cache.
CONVERTER_VERSION = 1
#: dlib's `input_rgb_image`: a chip enters as (pixel - channel mean) / 256, channels in RGB order.
CHIP_SIZE = 150
CHANNEL_MEANS = np.array([122.782, 117.001, 104.298], dtype=np.float32)
#: Residual stages: filters, blocks, and whether the first block halves the size.
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))
DESCRIPTOR = 128
INPUT, OUTPUT = "chip", "descriptor"

#: A layer's tag as dlib serializes a string: one byte for the length's size, the length, the characters.
_TAGS = re.compile(rb"\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2")


@dataclass(frozen=True)
class Convolution:
    """One convolution with the affine layer after it folded in (weights OIHW)."""

    weights: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


def chip_blob(chips: list[np.ndarray]) -> np.ndarray:
    """The network's input for 150x150 RGB chips: NCHW float32, as dlib's input layer computes it."""
    stacked = np.stack(chips).astype(np.float32)
    return np.ascontiguousarray(((stacked - CHANNEL_MEANS) / 256.0).transpose(0, 3, 1, 2))


def read_network(data: bytes) -> tuple[list[Convolution], np.ndarray]:
    """The 29 convolutions (affine folded in) and the 256x128 descriptor matrix of dlib's .dat bytes."""
    stream = _Stream(data)
    convolutions: list[Convolution] = []
    matrix: np.ndarray | None = None
    pending: tuple[np.ndarray, np.ndarray, int, int] | None = None
    for tag in iter(stream.next_tag, None):
        if tag == "con_4":
            _expect(pending is None and matrix is None, "two convolutions without an affine layer between them")
            params = stream.tensor()
            filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(7))
            _expect(rows == cols and stride_y == stride_x and pad_y == pad_x, "a non-square convolution")
            inputs, rest = divmod(params.size - filters, filters * rows * cols)
            _expect(rest == 0 and inputs > 0, "a convolution's weights do not fit its shape")
            weights = params[: filters * inputs * rows * cols].reshape(filters, inputs, rows, cols)
            pending = (weights, params[-filters:], stride_y, pad_y)
        elif tag == "affine_":
            _expect(pending is not None, "an affine layer without a convolution before it")
            assert pending is not None
            weights, bias, stride, padding = pending
            params = stream.tensor().astype(np.float64)
            _expect(params.size == 2 * weights.shape[0], "an affine layer of the wrong width")
            gamma, beta = np.split(params, 2)
            convolutions.append(
                Convolution(
                    weights=(weights * gamma[:, None, None, None]).astype(np.float32),
                    bias=(bias * gamma + beta).astype(np.float32),
                    stride=stride,
                    padding=padding,
                )
            )
            pending = None
        else:
            _expect(matrix is None and pending is None, "a second descriptor layer")
            outputs, inputs = stream.integer(), stream.integer()
            params = stream.tensor()
            _expect(params.size == inputs * outputs, "a descriptor layer of the wrong size")
            matrix = params.reshape(inputs, outputs)
    _expect(matrix is not None and matrix.shape == (256, DESCRIPTOR), "no 256x128 descriptor layer")
    _check_architecture(convolutions)
    assert matrix is not None
    return convolutions, matrix


def onnx_model(convolutions: list[Convolution], matrix: np.ndarray) -> bytes:
    """The network as a serialized ONNX model: input `chip` (N, 3, 150, 150), output `descriptor` (N, 128)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []

    def node(op: str, inputs: list[str], **attributes: Any) -> str:
        name = f"{op.lower()}{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attributes))
        return name

    def constant(value: np.ndarray) -> str:
        name = f"w{len(weights)}"
        weights.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    layers = iter(convolutions)

    def conv(x: str) -> str:
        c = next(layers)
        size = c.weights.shape[2]
        pads = [c.padding] * 4
        return node(
            "Conv",
            [x, constant(c.weights), constant(c.bias)],
            kernel_shape=[size, size],
            strides=[c.stride] * 2,
            pads=pads,
        )

    def padded(x: str, channels: int, pixels: int) -> str:
        """dlib's add_prev adds tensors of different sizes as if the smaller had zeros after its end."""
        if not channels and not pixels:
            return x
        return node("Pad", [x, constant(np.array([0, 0, 0, 0, 0, channels, pixels, pixels], np.int64))])

    x = node("Relu", [conv(INPUT)])
    x = node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    channels, side = 32, _pooled(_pooled(CHIP_SIZE, 7), 3)
    for filters, blocks, halves in STAGES:
        for block in range(blocks):
            down = halves and block == 0
            branch = conv(node("Relu", [conv(x)]))
            if down:
                out_side, shortcut_side = _pooled(side, 3), _pooled(side, 2)
                joined = max(out_side, shortcut_side)
                shortcut = node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
                branch = padded(branch, 0, joined - out_side)
                shortcut = padded(shortcut, filters - channels, joined - shortcut_side)
                x, side, channels = node("Relu", [node("Add", [branch, shortcut])]), joined, filters
            else:
                x = node("Relu", [node("Add", [branch, x])])
    pooled = node("Flatten", [node("GlobalAveragePool", [x])])
    nodes.append(helper.make_node("MatMul", [pooled, constant(matrix.astype(np.float32))], [OUTPUT], name=OUTPUT))
    graph = helper.make_graph(
        nodes,
        "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["n", 3, CHIP_SIZE, CHIP_SIZE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["n", DESCRIPTOR])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="rp")
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def cache_name(dat: Path) -> str:
    """The converted graph's file name in the cache folder: changes with the .dat and with this converter."""
    return f"dlib-resnet-{digest([dat], CONVERTER_VERSION)}.onnx"


def build(dat: Path) -> bytes:
    """The ONNX model of dlib's .dat file."""
    return onnx_model(*read_network(dat.read_bytes()))


def _pooled(side: int, window: int) -> int:
    """A side after a window of `window` at stride 2 with no padding (dlib pads only stride-1 layers)."""
    return (side - window) // 2 + 1


def _check_architecture(convolutions: list[Convolution]) -> None:
    expected = [(32, 3, 7, 2, 0)]
    channels = 32
    for filters, blocks, halves in STAGES:
        for block in range(blocks):
            down = halves and block == 0
            expected += [(filters, channels, 3, 2 if down else 1, 0 if down else 1), (filters, filters, 3, 1, 1)]
            channels = filters
    found = [(*c.weights.shape[:3], c.stride, c.padding) for c in convolutions]
    _expect(found == expected, f"{len(found)} convolutions unlike the 29 of dlib's ResNet v1")


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise RpError(
            f"not dlib's face recognition ResNet v1 as rp reads it ({problem}); "
            "set the dlib encoder's backend to dlib to use dlib's own loader"
        )


class _Stream:
    """dlib's serialization: an integer is a byte holding its length (and 0x80 for a sign) then little-endian
    bytes; a tensor is a version (2), four sizes, then raw little-endian float32 values."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def next_tag(self) -> str | None:
        """The next layer tag after what was read (None: no more), positioned after it."""
        found = _TAGS.search(self.data, self.at)
        if found is None:
            return None
        self.at = found.end()
        return found.group()[2:].decode()

    def integer(self) -> int:
        _expect(self.at < len(self.data), "the file ends inside a layer")
        head = self.data[self.at]
        size = head & 0x0F
        _expect(size <= 8 and self.at + 1 + size <= len(self.data), "the file ends inside a layer")
        value = int.from_bytes(self.data[self.at + 1 : self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        _expect(self.integer() == 2, "a tensor of an unknown serialization version")
        count = int(np.prod([self.integer() for _ in range(4)]))
        _expect(0 < count and self.at + 4 * count <= len(self.data), "a tensor past the end of the file")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.at).astype(np.float32)
        self.at += 4 * count
        return values
