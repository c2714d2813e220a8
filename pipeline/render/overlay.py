"""The overlay video: the source with face boxes, names, who is talking, emotions and the subtitle.

One pass over the source with PyAV, frame by frame (memory stays flat for an episode): each decoded
frame is painted and encoded with its own timestamp, so the overlay has the source's frame count,
timing and duration; the audio packets are copied unchanged (or re-encoded to AAC when the source's
codec does not fit in MP4). Text is drawn with PIL (antialiased, any Unicode the transcript holds) into
small sprites that are cached, because labels change a few times a second while frames come 25+ times;
boxes are drawn with OpenCV. Sizes scale with the frame height, so 360p and 1080p read alike.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import cv2
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from extractors.io import write_atomically
from extractors.media import probe, timeline_origin
from pipeline.render.colors import OFFSCREEN_COLOR, emotion_color, rgb
from pipeline.render.scene import Character, FaceBox, Scene

log = logging.getLogger(__name__)

Advance = Callable[[int, int], None]

# libx264 settings: visually clean, and fast enough on a laptop CPU for an episode
X264_OPTIONS = {"crf": "20", "preset": "veryfast"}
COPY_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "alac"}   # carried into MP4 as they are
TOP_EMOTIONS = 3
SUBTITLE_LINES = 2              # lines on screen at once; longer turns page along with their words
UNASSIGNED_COLOR = "#a0a0a0"    # a face track that belongs to no character
FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"   # DejaVu, shipped with matplotlib


@lru_cache(maxsize=32)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")), size)


def _rgba(color: str, alpha: int = 255) -> tuple[int, int, int, int]:
    return (*rgb(color), alpha)


def blend(image: np.ndarray, sprite: np.ndarray, x: int, y: int) -> None:
    """Alpha-composites an RGBA ``sprite`` onto RGB ``image`` with its top-left at (x, y), clipped."""
    h, w = sprite.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, image.shape[1]), min(y + h, image.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    part = sprite[y0 - y: y1 - y, x0 - x: x1 - x]
    alpha = part[..., 3:4].astype(np.uint16)
    region = image[y0:y1, x0:x1]
    region[:] = ((part[..., :3] * alpha + region * (255 - alpha) + 127) // 255).astype(np.uint8)


@dataclass(frozen=True)
class Layout:
    """Pixel sizes for one frame height."""
    font: int
    subtitle_font: int
    line: int
    thickness: int
    subtitle_reserve: int   # bottom pixels a one-line subtitle takes; face labels keep out of them

    @classmethod
    def for_height(cls, height: int) -> Layout:
        font, subtitle = max(11, round(height * 0.026)), max(13, round(height * 0.04))
        reserve = round(subtitle * 1.3) + 2 * round(subtitle * 0.4) + round(height * 0.04)
        return cls(font=font, subtitle_font=subtitle, line=round(font * 1.3),
                   thickness=max(2, round(height / 220)), subtitle_reserve=reserve)


@lru_cache(maxsize=512)
def _panel(layout: Layout, name: str, color: str, status: str | None, speaking: bool,
           rows: tuple[tuple[str, float, bool], ...]) -> np.ndarray:
    """A character's label: name, speaking/listening, and one bar per top emotion (label, p, predicted)."""
    s, line = layout.font, layout.line
    bold, regular, small = _font(s, True), _font(s), _font(max(9, round(s * 0.9)))
    pad = max(3, round(s * 0.35))
    label_w = max((small.getlength(label) for label, _, _ in rows), default=0)
    bar_w, value_w, gap = 4 * s, small.getlength("0.00"), round(s * 0.4)
    width = max(bold.getlength(name), regular.getlength(status or ""), label_w + bar_w + value_w + 2 * gap)
    lines = 1 + (status is not None) + len(rows)
    panel = Image.new("RGBA", (int(width + 2 * pad), lines * line + 2 * pad), (0, 0, 0, 165))
    draw = ImageDraw.Draw(panel)
    y = pad
    draw.text((pad, y), name, font=bold, fill=_rgba(color))
    y += line
    if status is not None:
        draw.text((pad, y), status, font=regular, fill=(255, 255, 255, 255) if speaking else (200, 200, 200, 255))
        y += line
    for index, (label, p, predicted) in enumerate(rows):
        top = y + (line - s) // 2
        draw.text((pad, y + (line - small.size) // 2), label, font=small,
                  fill=(255, 255, 255, 255) if predicted else (190, 190, 190, 255))
        x = pad + label_w + gap
        draw.rectangle((x, top + s * 0.15, x + bar_w, top + s * 0.85), fill=(70, 70, 70, 255))
        draw.rectangle((x, top + s * 0.15, x + max(1, bar_w * p), top + s * 0.85),
                       fill=_rgba(emotion_color(label, index)))
        draw.text((x + bar_w + gap, y + (line - small.size) // 2), f"{p:.2f}", font=small,
                  fill=(255, 255, 255, 255) if predicted else (190, 190, 190, 255))
        y += line
    return np.asarray(panel)


def _wrap(words: list[str], font: ImageFont.FreeTypeFont, width: float) -> list[list[int]]:
    """Greedy line breaks: lists of word indices, each line at most ``width`` pixels (a longer word alone)."""
    lines: list[list[int]] = []
    current: list[int] = []
    for index in range(len(words)):
        trial = " ".join(words[i] for i in [*current, index])
        if current and font.getlength(trial) > width:
            lines.append(current)
            current = []
        current.append(index)
    if current:
        lines.append(current)
    return lines


@dataclass(frozen=True)
class _Page:
    start: float            # when its first word begins
    lines: tuple[str, ...]


@lru_cache(maxsize=64)
def _subtitle(layout: Layout, prefix: str, color: str, lines: tuple[str, ...]) -> np.ndarray:
    bold, regular = _font(layout.subtitle_font, True), _font(layout.subtitle_font)
    pad, line = round(layout.subtitle_font * 0.4), round(layout.subtitle_font * 1.3)
    widths = [regular.getlength(text) + (bold.getlength(prefix) if i == 0 else 0) for i, text in enumerate(lines)]
    panel = Image.new("RGBA", (int(max(widths) + 2 * pad), len(lines) * line + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(panel)
    draw.rounded_rectangle((0, 0, panel.width - 1, panel.height - 1), radius=pad, fill=(0, 0, 0, 170))
    for i, text in enumerate(lines):
        x, y = pad + (panel.width - 2 * pad - widths[i]) / 2, pad + i * line
        if i == 0:
            draw.text((x, y), prefix, font=bold, fill=_rgba(color))
            x += bold.getlength(prefix)
        draw.text((x, y), text, font=regular, fill=(255, 255, 255, 255))
    return np.asarray(panel)


class Painter:
    """Draws the timeline's view of instant ``t`` onto a frame."""

    def __init__(self, scene: Scene, width: int, height: int):
        self.scene, self.width, self.height = scene, width, height
        self.layout = Layout.for_height(height)
        self._pages: dict[str, list[_Page]] = {}

    def paint(self, image: np.ndarray, t: float, shot: int | None) -> None:
        segments = self.scene.segments_at(t)
        speaking = {s["character"]: s["speaker_confidence"] for s in segments if s["character"]}
        faces = self.scene.faces_at(t, shot)
        for face in faces:
            self._face(image, face, t, speaking, [f.box for f in faces if f is not face])
        if segments:
            self._subtitle(image, segments[-1], t)

    def _face(self, image: np.ndarray, face: FaceBox, t: float, speaking: dict[str, float],
              others: list[tuple[float, float, float, float]]) -> None:
        character = self.scene.characters.get(face.character) if face.character else None
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        thick = self.layout.thickness
        if character is None:
            cv2.rectangle(image, (x1, y1), (x2, y2), rgb(UNASSIGNED_COLOR), max(1, thick // 2))
            return
        talking = character.id in speaking
        cv2.rectangle(image, (x1, y1), (x2, y2), rgb(character.color), thick * 2 if talking else thick)
        sprite = self._panel_for(character, t, speaking.get(character.id))
        x, y = self._place(sprite.shape[1], sprite.shape[0], (x1, y1, x2, y2), others)
        blend(image, sprite, x, y)

    def _place(self, w: int, h: int, box: tuple[int, int, int, int],
               others: list[tuple[float, float, float, float]]) -> tuple[int, int]:
        """Top-left of a face's label: below the box, else above, right, left (clear of the frame's edges,
        the subtitle line and other faces), else inside the box's top."""
        x1, y1, x2, y2 = box
        gap = self.layout.thickness * 2
        bottom = self.height - self.layout.subtitle_reserve
        left = min(max(x1, 0), max(self.width - w, 0))
        top = min(max(y1, 0), max(bottom - h, 0))
        candidates = [(left, y2 + gap), (left, y1 - gap - h), (x2 + gap, top), (x1 - gap - w, top)]

        def fits(x: int, y: int) -> bool:
            return x >= 0 and y >= 0 and x + w <= self.width and y + h <= bottom

        def clear(x: int, y: int) -> bool:
            return all(x + w <= ox1 or ox2 <= x or y + h <= oy1 or oy2 <= y for ox1, oy1, ox2, oy2 in others)

        for x, y in candidates:
            if fits(x, y) and clear(x, y):
                return x, y
        for x, y in candidates:
            if fits(x, y):
                return x, y
        return left, max(y1, 0) + gap

    def _panel_for(self, character: Character, t: float, confidence: float | None) -> np.ndarray:
        entry = self.scene.entry_at(character.id, t)
        if confidence is not None:
            status: str | None = f"speaking · sync {confidence:.2f}"
        elif entry is not None:
            status = "speaking" if entry["role"] == "speaker" else "listening"
        else:
            status = None
        rows: tuple[tuple[str, float, bool], ...] = ()
        if entry is not None:
            top = sorted(entry["probs"].items(), key=lambda item: -item[1])[:TOP_EMOTIONS]
            rows = tuple((label, round(float(p), 2), label in entry["labels"]) for label, p in top)
        return _panel(self.layout, character.label, character.color, status, confidence is not None, rows)

    def _subtitle(self, image: np.ndarray, segment: dict, t: float) -> None:
        character = self.scene.characters.get(segment["character"]) if segment["character"] else None
        if character is not None:
            prefix, color = f"{character.label}: ", character.color
        else:
            prefix, color = f"{segment['voice'] or 'voice'} (off screen): ", OFFSCREEN_COLOR
        pages = self._pages.get(segment["id"])
        if pages is None:
            pages = self._pages[segment["id"]] = self._paginate(segment, prefix)
        page = pages[0]
        for candidate in pages:
            if candidate.start <= t:
                page = candidate
        sprite = _subtitle(self.layout, prefix, color, page.lines)
        h, w = sprite.shape[:2]
        blend(image, sprite, (self.width - w) // 2, self.height - h - round(self.height * 0.04))

    def _paginate(self, segment: dict, prefix: str) -> list[_Page]:
        words = [w["text"].strip() for w in segment["words"] if w["text"].strip()]
        starts = [w["start"] for w in segment["words"] if w["text"].strip()]
        if not words:  # no word times: spread the text's words over the turn
            words = segment["text"].split() or [""]
            step = (segment["end"] - segment["start"]) / len(words)
            starts = [segment["start"] + i * step for i in range(len(words))]
        font = _font(self.layout.subtitle_font)
        budget = 0.9 * self.width - _font(self.layout.subtitle_font, True).getlength(prefix)
        lines = _wrap(words, font, max(budget, 0.3 * self.width))
        pages = []
        for i in range(0, len(lines), SUBTITLE_LINES):
            chunk = lines[i: i + SUBTITLE_LINES]
            pages.append(_Page(segment["start"] if i == 0 else starts[chunk[0][0]],
                               tuple(" ".join(words[j] for j in line) for line in chunk)))
        return pages


def _signature(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)


@dataclass
class _Held:
    t: float
    image: np.ndarray
    pts: int
    signature: np.ndarray


class ShotClock:
    """Gives each frame its shot. Between the last analysed frame of one shot and the first of the next
    the cut is somewhere in a few frames: they are held back until the next shot is reached, and the cut is
    put where consecutive pictures differ most. Holding is capped, so memory stays bounded."""

    def __init__(self, scene: Scene, fps: float, max_held_s: float = 2.0, max_held: int = 64):
        self.scene = scene
        self.cap = max(2, min(max_held, int(math.ceil(max_held_s * max(fps, 1.0)))))
        self.held: list[_Held] = []
        self.gap: tuple[int, int] | None = None
        self.previous: np.ndarray | None = None   # signature of the last frame given out

    def push(self, t: float, image: np.ndarray, pts: int) -> list[tuple[float, np.ndarray, int, int | None]]:
        shot = self.scene.shot_at(t)
        out: list[tuple[float, np.ndarray, int, int | None]] = []
        signature = _signature(image)
        if isinstance(shot, tuple):
            if self.held and shot != self.gap:
                out += self._release(None)
            self.gap = shot
            self.held.append(_Held(t, image, pts, signature))
            if len(self.held) >= self.cap:   # no cut found in time: draw no boxes rather than wrong ones
                out += [(h.t, h.image, h.pts, None) for h in self.held]
                self.held, self.previous = [], signature
            return out
        if self.held:
            out += self._release(signature)
        self.previous = signature
        out.append((t, image, pts, shot))
        return out

    def flush(self) -> list[tuple[float, np.ndarray, int, int | None]]:
        return self._release(None) if self.held else []

    def _release(self, following: np.ndarray | None) -> list[tuple[float, np.ndarray, int, int | None]]:
        """Frames before the biggest picture change go to the earlier shot, the rest to the later one."""
        assert self.gap is not None
        before, after = self.gap
        chain = [self.previous, *(h.signature for h in self.held), following]
        changes = [-1.0 if a is None or b is None else float(np.abs(a - b).mean())
                   for a, b in zip(chain[:-1], chain[1:], strict=True)]
        cut = int(np.argmax(changes)) if max(changes) >= 0 else len(self.held)
        out = [(h.t, h.image, h.pts, before if i < cut else after) for i, h in enumerate(self.held)]
        self.previous = self.held[-1].signature
        self.held, self.gap = [], None
        return out


@dataclass
class OverlayStats:
    frames: int
    seconds: float    # of video
    audio: str        # "copied", "re-encoded" or "none"


def _upright(image: np.ndarray, clockwise: int) -> np.ndarray:
    if clockwise % 360 == 0:
        return np.ascontiguousarray(image)
    return np.ascontiguousarray(np.rot90(image, k=-(clockwise // 90)))


def render_overlay(timeline: dict, video: Path, out_path: Path, base_dir: Path | None = None,
                   progress: Advance | None = None) -> OverlayStats:
    """Writes the overlay MP4 (H.264 + the source's audio) at ``out_path`` atomically."""
    scene = Scene(timeline, base_dir)
    info = probe(video)   # upright size; raises MediaError for an unreadable file
    stats = OverlayStats(0, 0.0, "none")

    def write(temporary: Path) -> None:
        nonlocal stats
        stats = _write(scene, video, info.width, info.height, temporary, progress)

    write_atomically(out_path, write)
    return stats


def _write(scene: Scene, video: Path, width: int, height: int, out: Path, progress: Advance | None) -> OverlayStats:
    width, height = width - width % 2, height - height % 2   # yuv420p wants even sizes: drop an odd edge
    painter = Painter(scene, width, height)
    with av.open(str(video)) as source, av.open(str(out), "w", format="mp4",
                                               options={"movflags": "+faststart"}) as sink:
        vin = source.streams.video[0]
        vin.thread_type = "AUTO"
        time_base = vin.time_base or Fraction(1, 90000)
        origin = vin.start_time * time_base if vin.start_time is not None else Fraction(timeline_origin(source))
        fps = float(vin.average_rate or 25)
        vout = sink.add_stream("libx264", rate=vin.average_rate or Fraction(25))
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.time_base = vout.codec_context.time_base = time_base
        vout.options = dict(X264_OPTIONS)
        ain = source.streams.audio[0] if source.streams.audio else None
        aout, audio_mode = None, "none"
        if ain is not None and ain.codec_context.name in COPY_AUDIO_CODECS:
            aout, audio_mode = sink.add_stream_from_template(ain), "copied"
        elif ain is not None:
            aout = sink.add_stream("aac", rate=ain.codec_context.sample_rate or 48000)
            aout.layout = ain.codec_context.layout.name if ain.codec_context.layout else "stereo"
            audio_mode = "re-encoded"
        resampler = av.AudioResampler(format="fltp", layout=aout.layout, rate=aout.rate) \
            if audio_mode == "re-encoded" else None
        clock = ShotClock(scene, fps)
        total = int(vin.frames) if vin.frames else int(round((float(vin.duration * time_base) if vin.duration
                                                             else 0.0) * fps))
        frames, last_pts, last_t = 0, None, 0.0

        def emit(released) -> None:
            nonlocal frames
            for t, image, pts, shot in released:
                painter.paint(image, t, shot)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = pts, time_base
                for packet in vout.encode(frame):
                    sink.mux(packet)
                frames += 1
                if progress is not None:
                    progress(frames, max(total, frames))

        streams = [vin] + ([ain] if ain is not None else [])
        for packet in source.demux(*streams):
            if packet.stream.type == "video":
                for decoded in packet.decode():
                    pts = decoded.pts
                    if pts is None:   # no timestamp: one frame after the last
                        pts = (last_pts or 0) + max(1, int(round(1 / (fps * time_base))))
                    last_pts = pts
                    last_t = float(pts * time_base - origin)
                    image = _upright(decoded.to_ndarray(format="rgb24"), _clockwise(decoded))[:height, :width]
                    emit(clock.push(last_t, np.ascontiguousarray(image), pts))
            elif audio_mode == "copied":
                if packet.dts is None:
                    continue
                packet.stream = aout
                sink.mux(packet)
            elif audio_mode == "re-encoded":
                for decoded in packet.decode():
                    for piece in resampler.resample(decoded):
                        for out_packet in aout.encode(piece):
                            sink.mux(out_packet)
        emit(clock.flush())
        for packet in vout.encode():
            sink.mux(packet)
        if audio_mode == "re-encoded":
            for piece in resampler.resample(None):
                for out_packet in aout.encode(piece):
                    sink.mux(out_packet)
            for out_packet in aout.encode():
                sink.mux(out_packet)
    return OverlayStats(frames, last_t + 1.0 / fps if frames else 0.0, audio_mode)


def _clockwise(frame: av.VideoFrame) -> int:
    """Clockwise degrees that make the picture upright (the display matrix stores counter-clockwise)."""
    return int(round(-frame.rotation / 90.0)) * 90 % 360
