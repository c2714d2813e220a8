"""The MTCNN cascade (Zhang et al. 2016) over uint8 frames, with facenet-pytorch's trained P/R/O-Nets.

facenet-pytorch's ``detect_face`` resizes the pyramid and every candidate crop with
``torch.nn.functional.interpolate(mode="area")`` (an adaptive average pool, 40 % of its time on CPU)
and loops over candidates in Python. Here the same cascade resizes with OpenCV on uint8 arrays and
suppresses with OpenCV's NMS (the same boxes as torchvision's); the nets, thresholds, pyramid and box
arithmetic are facenet-pytorch's, so the detections agree with it to resampling differences.

:meth:`MtcnnCascade.verify` runs only the last stage (O-Net) on boxes given from outside: on frames
between full detections, the faces found a moment earlier are re-measured (score, box, landmarks)
at a small fraction of the cost of the pyramid.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

_STRIDE, _CELL = 2, 12          # P-Net's output stride and receptive field on the pyramid level


@dataclass
class CascadeOutput:
    """The faces of one frame: ``boxes`` [N, 5] x1, y1, x2, y2, score; ``points`` [N, 5, 2] x, y."""

    boxes: np.ndarray
    points: np.ndarray

    @classmethod
    def empty(cls) -> CascadeOutput:
        return cls(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32))


def nms_indices(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy IoU suppression (torchvision's rule: areas without +1, drop IoU > threshold), best first."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2]], axis=1).astype(np.float64)
    keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.astype(np.float32).tolist(), 0.0, float(threshold))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


def nms_min_indices(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Suppression by intersection over the smaller box (MTCNN's last step; areas with +1)."""
    order = np.argsort(scores, kind="stable")[::-1]
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        w = np.maximum(0.0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        keep.append(i)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def per_image(keep_fn, boxes: np.ndarray, image_index: np.ndarray, threshold: float) -> np.ndarray:
    """``keep_fn`` applied within each image; kept indices in ascending order."""
    kept = [np.flatnonzero(image_index == i)[keep_fn(boxes[image_index == i, :4], boxes[image_index == i, 4], threshold)]
            for i in np.unique(image_index)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (``rerec``)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Applies the nets' box regression (``bbreg``: offsets in units of the box's side + 1)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, 0] += offsets[:, 0] * w
    out[:, 1] += offsets[:, 1] * h
    out[:, 2] += offsets[:, 2] * w
    out[:, 3] += offsets[:, 3] * h
    return out


def crops(frames: np.ndarray, boxes: np.ndarray, image_index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each box cut from its frame (clipped to the frame, as facenet-pytorch's ``pad``), resized to size x size.

    Returns the normalised crops [M, size, size, 3] float32 and the indices of the boxes they belong to
    (a box entirely outside its frame gives none).
    """
    height, width = frames.shape[1:3]
    ints = np.trunc(boxes[:, :4]).astype(np.int64)
    x = np.maximum(ints[:, 0], 1)
    y = np.maximum(ints[:, 1], 1)
    ex = np.minimum(ints[:, 2], width)
    ey = np.minimum(ints[:, 3], height)
    valid = np.flatnonzero((ey > y - 1) & (ex > x - 1))
    out = np.empty((len(valid), size, size, 3), dtype=np.uint8)
    for slot, k in enumerate(valid):
        patch = frames[image_index[k], y[k] - 1 : ey[k], x[k] - 1 : ex[k]]
        out[slot] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return normalise(out), valid


def normalise(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) - 127.5) * 0.0078125


class MtcnnCascade:
    """P-Net over an image pyramid, then R-Net and O-Net on the surviving candidates."""

    def __init__(self, pnet: torch.nn.Module, rnet: torch.nn.Module, onet: torch.nn.Module, *,
                 thresholds: tuple[float, float, float], factor: float, min_face_size: int,
                 device: torch.device, crop_batch: int = 128):
        if crop_batch < 1:
            raise ValueError("crop_batch must be at least 1")
        self.pnet, self.rnet, self.onet = pnet, rnet, onet
        self.crop_batch = crop_batch
        self.thresholds = thresholds
        self.factor = factor
        self.min_face_size = min_face_size
        self.device = device

    def _net(self, net: torch.nn.Module, batch: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, ...]:
        """The net's outputs on ``batch`` [N, H, W, 3], ``chunk`` samples per call (None: all at once)."""
        chunk = chunk or max(len(batch), 1)
        parts = []
        for first in range(0, max(len(batch), 1), chunk):
            # NHWC in memory and NCHW in shape: the channels-last layout the nets were converted to.
            tensor = torch.from_numpy(batch[first:first + chunk]).to(self.device).permute(0, 3, 1, 2)
            parts.append(tuple(out.float().cpu().numpy() for out in net(tensor)))
        return parts[0] if len(parts) == 1 else tuple(np.concatenate(outs) for outs in zip(*parts, strict=True))

    def scales(self, height: int, width: int) -> list[float]:
        scale = 12.0 / self.min_face_size
        side = min(height, width) * scale
        found = []
        while side >= 12:
            found.append(scale)
            scale *= self.factor
            side *= self.factor
        return found

    @torch.inference_mode()
    def detect(self, frames: np.ndarray) -> list[CascadeOutput]:
        """Faces in each frame of ``frames`` [B, H, W, 3] uint8 RGB."""
        boxes, image_index = self._propose(frames)
        if len(boxes):
            boxes, image_index = self._refine(frames, boxes, image_index)
        return self._output(frames, boxes, image_index)

    @torch.inference_mode()
    def verify(self, frames: np.ndarray, prior: list[np.ndarray]) -> list[CascadeOutput]:
        """O-Net alone on ``prior[i]`` ([N, 4] boxes, x1, y1, x2, y2) of frame i: the faces still there."""
        boxes = [np.asarray(p, dtype=np.float32).reshape(-1, 4) for p in prior]
        image_index = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(boxes)]) \
            if boxes else np.zeros(0, dtype=np.int64)
        stacked = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
        stacked = square(np.concatenate([stacked, np.ones((len(stacked), 1), np.float32)], axis=1))
        return self._output(frames, stacked, image_index)

    def _propose(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch, height, width = frames.shape[:3]
        found, found_index = [], []
        level = list(frames)
        for scale in self.scales(height, width):
            size = (int(width * scale + 1), int(height * scale + 1))
            # Each level from the one above: area averaging over 1/0.709 pixels, not over 25 at the top
            # of the pyramid (5x less resampling than from the frame; the same smoothing).
            level = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in level]
            offsets, probs = self._net(self.pnet, normalise(np.stack(level)))   # [B, 4, h, w], [B, 2, h, w]
            image, row, col = np.nonzero(probs[:, 1] >= self.thresholds[0])
            if not len(image):
                continue
            cells = np.stack([col, row], axis=1).astype(np.float32)
            boxes = np.concatenate([
                np.floor((_STRIDE * cells + 1) / scale),
                np.floor((_STRIDE * cells + _CELL) / scale),
                probs[image, 1, row, col][:, None],
                offsets[image, :, row, col],
            ], axis=1).astype(np.float32)
            keep = per_image(nms_indices, boxes, image, 0.5)
            found.append(boxes[keep])
            found_index.append(image[keep])
        if not found:
            return np.zeros((0, 9), np.float32), np.zeros(0, np.int64)
        boxes, image_index = np.concatenate(found), np.concatenate(found_index)
        keep = per_image(nms_indices, boxes, image_index, 0.7)
        boxes, image_index = boxes[keep], image_index[keep]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        calibrated = np.stack([boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h,
                               boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h, boxes[:, 4]], axis=1)
        return square(calibrated), image_index

    def _refine(self, frames, boxes, image_index) -> tuple[np.ndarray, np.ndarray]:
        patches, valid = crops(frames, boxes, image_index, 24)
        if not len(valid):
            return np.zeros((0, 5), np.float32), np.zeros(0, np.int64)
        # Candidates a chunk at a time: a crowded frame gives hundreds, and R-Net's and O-Net's activations
        # for all of them at once were the visual pass's largest transient (its peak; the same outputs).
        offsets, probs = self._net(self.rnet, patches, self.crop_batch)          # [M, 4], [M, 2]
        passed = probs[:, 1] > self.thresholds[1]
        boxes = np.concatenate([boxes[valid][passed, :4], probs[passed, 1:2]], axis=1)
        image_index, offsets = image_index[valid][passed], offsets[passed]
        keep = per_image(nms_indices, boxes, image_index, 0.7)
        return square(regress(boxes[keep], offsets[keep])), image_index[keep]

    def _output(self, frames, boxes, image_index) -> list[CascadeOutput]:
        results = [CascadeOutput.empty() for _ in range(len(frames))]
        if not len(boxes):
            return results
        patches, valid = crops(frames, boxes, image_index, 48)
        if not len(valid):
            return results
        offsets, marks, probs = self._net(self.onet, patches, self.crop_batch)   # [M, 4], [M, 10], [M, 2]
        passed = probs[:, 1] > self.thresholds[2]
        boxes = np.concatenate([boxes[valid][passed, :4], probs[passed, 1:2]], axis=1)
        image_index, offsets, marks = image_index[valid][passed], offsets[passed], marks[passed]
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        points = np.stack([w * marks[:, :5] + boxes[:, 0:1] - 1, h * marks[:, 5:] + boxes[:, 1:2] - 1], axis=2)
        boxes = regress(boxes, offsets)
        keep = per_image(nms_min_indices, boxes, image_index, 0.7)
        for i in np.unique(image_index[keep]):
            mine = keep[image_index[keep] == i]
            results[i] = CascadeOutput(boxes[mine].astype(np.float32), points[mine].astype(np.float32))
        return results
