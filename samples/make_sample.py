"""Makes ``samples/two_people.mp4`` and its ground truth ``samples/two_people.json``.

A 17.5 s, 640x360, 25 fps clip with AAC audio in which two public-domain portraits talk in turns:

- ``astronaut``: Eileen Collins (NASA photo, public domain), shipped by scikit-image as
  ``skimage.data.astronaut()``;
- ``grace_hopper``: Rear Admiral Grace Hopper (US Navy photo, public domain), shipped by matplotlib as
  ``mpl-data/sample_data/grace_hopper.jpg``.

Each line is spoken by espeak-ng with that character's own voice and a per-line pitch, speed and
loudness chosen for the line's intended emotion (joy, anger, sadness). Each face's mouth opens with the
envelope of its OWN speech only (RMS at 25 fps, smoothed): the lower face below the mouth line (found by
the project's MTCNN, :class:`extractors.faces.FaceDetector`) is pulled down and the gap is filled with a
dark mouth interior; both heads also sway slightly, so neither is a still image. The layout is side by
side (the listener stays visible, mouth closed) except during the third line, where a cut shows the
speaker alone in a close-up, so the clip also has shots.

Run with the project's venv, from anywhere::

    apt-get install -y espeak-ng          # only needed to regenerate the sample
    .venv/bin/python samples/make_sample.py [--out-dir samples]

Needs espeak-ng on PATH (the script stops with one clear line when it is missing) and scikit-image (the
project's ``dev`` extra, which ``./setup.sh`` installs). Deterministic: with the same espeak-ng, PyAV and
OpenCV versions, two runs write byte-identical files (no clocks, no randomness, single-threaded x264).
The JSON records the versions used. ``samples/README.md`` describes the clip and its licences.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages, run from anywhere

log = logging.getLogger("make_sample")

FPS = 25
WIDTH, HEIGHT = 640, 360
TILE_WIDTH = WIDTH // 2
LEAD_IN_S = 0.6          # silence before the first line
PAUSE_S = 0.8            # silence between turns
TAIL_S = 0.8             # silence after the last line
NAME = "two_people"


# ------------------------------------------------------------------------------------------ the cast


@dataclass(frozen=True)
class Framing:
    """Where a photo goes on the canvas: photo point ``anchor`` lands on canvas point ``target``."""

    scale: float                   # canvas pixels per photo pixel
    target: tuple[float, float]    # canvas (x, y) of the face centre
    region: tuple[int, int, int, int]  # canvas x0, y0, x1, y1 this framing fills


@dataclass(frozen=True)
class CharacterSpec:
    name: str                # the photo's name: "astronaut" or "grace_hopper"
    person: str
    source: str              # where the photo comes from (an installed package)
    licence: str
    voice: str               # espeak-ng voice (language + variant)
    two_shot: Framing        # side-by-side tile
    close_up: Framing        # alone on screen
    sway_phase: float        # radians; the two heads do not move in step


@dataclass(frozen=True)
class Line:
    speaker: str
    text: str
    emotion: str             # intended emotion, one of the project's labels
    pitch: int               # espeak-ng -p (0-99, default 50)
    speed: int               # espeak-ng -s, words per minute (default 175)
    amplitude: int           # espeak-ng -a (0-200, default 100)


CAST = (
    CharacterSpec(
        name="astronaut", person="Eileen Collins",
        source="scikit-image: skimage.data.astronaut() (skimage/data/astronaut.png)",
        licence="public domain (NASA photograph, via scikit-image)",
        voice="en-us+f3",
        two_shot=Framing(scale=1.3, target=(160.0, 150.0), region=(0, 0, TILE_WIDTH, HEIGHT)),
        close_up=Framing(scale=2.2, target=(320.0, 165.0), region=(0, 0, WIDTH, HEIGHT)),
        sway_phase=0.0,
    ),
    CharacterSpec(
        name="grace_hopper", person="Grace Hopper",
        source="matplotlib: mpl-data/sample_data/grace_hopper.jpg",
        licence="public domain (US Navy photograph, via matplotlib)",
        voice="en-us+grandma",
        two_shot=Framing(scale=0.72, target=(TILE_WIDTH + 160.0, 165.0), region=(TILE_WIDTH, 0, WIDTH, HEIGHT)),
        close_up=Framing(scale=1.2, target=(320.0, 165.0), region=(0, 0, WIDTH, HEIGHT)),
        sway_phase=2.1,
    ),
)

# Joy: higher, quick and bright; anger: loud and fast; sadness: low, slow and quiet.
SCRIPT = (
    Line("astronaut", "We made it! The launch was perfect, and I feel wonderful!",
         "joy", pitch=78, speed=190, amplitude=120),
    Line("grace_hopper", "Perfect? The computer crashed twice! I am furious!",
         "anger", pitch=30, speed=195, amplitude=190),
    Line("astronaut", "Oh. I am so sorry. I thought this was our best day.",
         "sadness", pitch=35, speed=145, amplitude=70),
    Line("grace_hopper", "Cheer up! We fixed it, and tomorrow we fly again!",
         "joy", pitch=62, speed=165, amplitude=130),
)
CLOSE_UP_LINE = 2        # index in SCRIPT of the line shown as a close-up of its speaker


# ------------------------------------------------------------------------------------------ inputs


def require_espeak() -> str:
    """Path of espeak-ng, or a clear exit: it is only needed to regenerate the sample."""
    path = shutil.which("espeak-ng")
    if path is None:
        sys.exit("make_sample: espeak-ng not found on PATH; install it (apt-get install -y espeak-ng) "
                 "to regenerate the sample (the committed samples/two_people.mp4 needs nothing)")
    return path


def espeak_version(espeak: str) -> str:
    out = subprocess.run([espeak, "--version"], capture_output=True, text=True, check=True).stdout
    # "eSpeak NG text-to-speech: 1.51  Data at: ..." -> "1.51"
    return out.split(":", 1)[1].split()[0] if ":" in out else out.strip()


def load_photo(name: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB portrait from the package that ships it."""
    if name == "astronaut":
        try:
            from skimage import data
        except ImportError:
            sys.exit("make_sample: scikit-image is missing; run ./setup.sh (it installs the dev extra)")
        return np.ascontiguousarray(data.astronaut()[..., :3])
    if name == "grace_hopper":
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        return np.asarray(Image.open(path).convert("RGB"))
    raise ValueError(name)


@dataclass(frozen=True)
class FaceGeometry:
    """Where the face and mouth are in the photo (photo pixels), from MTCNN."""

    box: tuple[float, float, float, float]
    centre: tuple[float, float]        # centre of the face box
    mouth_left: tuple[float, float]
    mouth_right: tuple[float, float]

    @property
    def mouth_centre(self) -> tuple[float, float]:
        return ((self.mouth_left[0] + self.mouth_right[0]) / 2, (self.mouth_left[1] + self.mouth_right[1]) / 2)

    @property
    def mouth_width(self) -> float:
        return math.dist(self.mouth_left, self.mouth_right)


def find_faces(photos: dict[str, np.ndarray]) -> dict[str, FaceGeometry]:
    import torch

    from extractors.faces import FaceDetector, FaceDetectorConfig

    torch.set_num_threads(1)
    detector = FaceDetector(FaceDetectorConfig(device="cpu"))
    geometry = {}
    for name, photo in photos.items():
        found = detector.detect([photo], [0.0])[0]
        if len(found) != 1:
            raise RuntimeError(f"expected one face in {name}, MTCNN found {len(found)}")
        face = found[0]
        # Rounded to 0.01 px: the clip must not depend on float noise in the detector.
        x1, y1, x2, y2 = (round(v, 2) for v in face.box)
        points = [(round(float(x), 2), round(float(y), 2)) for x, y in face.landmarks]
        geometry[name] = FaceGeometry(box=(x1, y1, x2, y2), centre=((x1 + x2) / 2, (y1 + y2) / 2),
                                      mouth_left=points[3], mouth_right=points[4])
        log.info("%s: face %s, mouth %s-%s", name, geometry[name].box, points[3], points[4])
    return geometry


def synthesize(espeak: str, voice: str, line: Line, folder: Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples trimmed of leading and trailing silence, sample rate) of one line."""
    path = folder / "line.wav"
    subprocess.run([espeak, "-v", voice, "-p", str(line.pitch), "-s", str(line.speed), "-a", str(line.amplitude),
                    "-w", str(path), line.text], check=True, capture_output=True)
    with wave.open(str(path), "rb") as handle:
        if handle.getsampwidth() != 2 or handle.getnchannels() != 1:
            raise RuntimeError(f"unexpected espeak-ng output: {handle.getparams()}")
        rate = handle.getframerate()
        samples = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1], rate


# ------------------------------------------------------------------------------------------ schedule


@dataclass(frozen=True)
class Turn:
    start: float
    end: float
    speaker: str
    text: str
    emotion: str

    def serialize(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayoutSpan:
    start: float
    end: float
    shot: str                                   # "two-shot" (side by side) or "close-up" (one face alone)
    visible: dict[str, tuple[int, int, int, int]]  # character -> canvas region x0, y0, x1, y1 it fills

    def serialize(self) -> dict:
        return {"start": self.start, "end": self.end, "shot": self.shot,
                "visible": [{"character": name, "region": list(region)} for name, region in self.visible.items()]}


def place_lines(clips: list[np.ndarray], rate: int) -> tuple[list[Turn], dict[str, np.ndarray], int]:
    """(turns, character -> that character's own audio track over the whole clip, total samples)."""
    cursor = round(LEAD_IN_S * rate)
    spans = []
    for clip in clips:
        spans.append((cursor, cursor + len(clip)))
        cursor += len(clip) + round(PAUSE_S * rate)
    total = cursor - round(PAUSE_S * rate) + round(TAIL_S * rate)
    # Whole frames only, so video and audio end together.
    samples_per_frame = Fraction(rate, FPS)
    frames = math.ceil(total / samples_per_frame)
    total = math.ceil(frames * samples_per_frame)
    tracks = {spec.name: np.zeros(total, dtype=np.float32) for spec in CAST}
    turns = []
    for line, clip, (a, b) in zip(SCRIPT, clips, spans, strict=True):
        tracks[line.speaker][a:b] = clip
        turns.append(Turn(round(a / rate, 3), round(b / rate, 3), line.speaker, line.text, line.emotion))
    return turns, tracks, total


def plan_layout(turns: list[Turn], duration: float) -> list[LayoutSpan]:
    """Side by side, except a close-up of the speaker of SCRIPT[CLOSE_UP_LINE]; cuts fall in the pauses."""
    turn = turns[CLOSE_UP_LINE]
    cut_in = round(turn.start - PAUSE_S / 2, 2)
    cut_out = round(turn.end + PAUSE_S / 2, 2)
    side_by_side = {spec.name: spec.two_shot.region for spec in CAST}
    alone = next(spec for spec in CAST if spec.name == turn.speaker)
    return [
        LayoutSpan(0.0, cut_in, "two-shot", side_by_side),
        LayoutSpan(cut_in, cut_out, "close-up", {alone.name: alone.close_up.region}),
        LayoutSpan(cut_out, round(duration, 3), "two-shot", side_by_side),
    ]


def mouth_envelope(track: np.ndarray, rate: int, frames: int) -> np.ndarray:
    """[frames] mouth opening in [0, 1] from the RMS of ``track`` around each frame time, smoothed."""
    half = rate // (2 * FPS)      # 40 ms window centred on the frame
    rms = np.zeros(frames, dtype=np.float64)
    for index in range(frames):
        centre = round(index * rate / FPS)
        window = track[max(0, centre - half) : centre + half].astype(np.float64)
        rms[index] = math.sqrt(float(np.mean(window**2))) if len(window) else 0.0
    voiced = rms[rms > 1e-3]
    if not len(voiced):
        return np.zeros(frames)
    opening = np.clip(rms / np.percentile(voiced, 90), 0.0, 1.0) ** 0.7
    opening[rms < 0.01] = 0.0           # closed in silence and between words
    # Three-frame moving average: lips do not jump open and shut within 40 ms.
    return np.convolve(np.pad(opening, 1, mode="edge"), np.ones(3) / 3, mode="valid")


# ------------------------------------------------------------------------------------------ drawing


MOUTH_INTERIOR = np.array([48.0, 14.0, 20.0])  # RGB of the open mouth


def open_mouth(photo: np.ndarray, face: FaceGeometry, opening: float) -> np.ndarray:
    """The photo with the jaw dropped by ``opening`` (0..1) and the gap filled with a dark mouth.

    Below the mouth line, each pixel is taken from ``drop * g(x) * h(y)`` pixels higher: g is a raised
    cosine across the mouth (so the gap is lens-shaped between the corners) and h fades the pull out
    towards the neck (the chin moves, the collar does not). Where the source would lie above the mouth
    line, the pixel is inside the open mouth.
    """
    if opening <= 0.02:
        return photo
    import cv2

    cx, cy = face.mouth_centre
    width = face.mouth_width
    drop = opening * 0.4 * width
    half_width = 0.6 * width
    x0, x1 = int(cx - half_width) - 1, int(cx + half_width) + 2
    y0, y1 = int(cy) - 2, int(cy + 2.2 * width)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    across = np.clip(np.abs(xs - cx) / half_width, 0.0, 1.0)
    g = 0.5 * (1.0 + np.cos(np.pi * across))
    below = np.clip((ys - cy) / (2.2 * width), 0.0, 1.0)
    h = np.where(ys >= cy, np.clip(1.6 - 1.6 * below, 0.0, 1.0), 0.0)
    pull = drop * g * h                                   # [h, w] pixels the source lies above
    source_y = ys - pull
    warped = cv2.remap(photo, xs, source_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped = warped.astype(np.float32)
    # Inside the mouth: the source crossed the mouth line; shade with depth (darker in the middle).
    inside = np.clip((cy - source_y) / 1.5, 0.0, 1.0) * (ys >= cy)
    depth = np.clip((cy - source_y) / max(drop, 1e-6), 0.0, 1.0)
    colour = MOUTH_INTERIOR * (0.6 + 0.4 * (1.0 - depth))[..., None]
    patch = warped * (1.0 - inside[..., None]) + colour * inside[..., None]
    out = photo.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    return out


def head_pose(spec: CharacterSpec, t: float, opening: float) -> tuple[float, float, float, float]:
    """(angle degrees, dx, dy, scale factor) of a slow sway, plus a small nod while speaking."""
    phase = spec.sway_phase
    angle = 1.6 * math.sin(2 * math.pi * 0.23 * t + phase) + 0.5 * math.sin(2 * math.pi * 0.61 * t + 2 * phase)
    dx = 3.0 * math.sin(2 * math.pi * 0.17 * t + 1.3 * phase)
    dy = 2.0 * math.sin(2 * math.pi * 0.29 * t + 0.7 * phase) + 2.5 * opening
    scale = 1.0 + 0.012 * math.sin(2 * math.pi * 0.11 * t + phase)
    return angle, dx, dy, scale


def draw(canvas: np.ndarray, photo: np.ndarray, face: FaceGeometry, spec: CharacterSpec, framing: Framing,
         t: float, opening: float) -> None:
    """Warps the (mouth-opened) photo into ``framing.region`` of ``canvas`` in place."""
    import cv2

    angle, dx, dy, wobble = head_pose(spec, t, opening)
    x0, y0, x1, y1 = framing.region
    # Rotation and scale about the face centre, which lands at the framing's target (region coordinates).
    matrix = cv2.getRotationMatrix2D(face.centre, angle, framing.scale * wobble)
    matrix[0, 2] += framing.target[0] - x0 + dx - face.centre[0]
    matrix[1, 2] += framing.target[1] - y0 + dy - face.centre[1]
    tile = cv2.warpAffine(open_mouth(photo, face, opening), matrix, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    canvas[y0:y1, x0:x1] = tile


# ------------------------------------------------------------------------------------------ output


def encode(path: Path, frames_rgb, audio: np.ndarray, rate: int) -> None:
    """H.264 (yuv420p, single-threaded so the bytes are reproducible) + AAC mono into an MP4."""
    import av

    samples_per_frame = Fraction(rate, FPS)
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.options = {"crf": "26", "preset": "medium", "threads": "1"}
        video.codec_context.thread_count = 1
        sound = container.add_stream("aac", rate=rate, layout="mono")
        sound.bit_rate = 64000   # measured: at 48 kbit/s the diarizer counted 3 voices, at 96 whisper misheard 6 words
        written = 0
        for index, rgb in enumerate(frames_rgb):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
            # The audio of this frame's span, so the muxer interleaves as it goes.
            upto = math.ceil((index + 1) * samples_per_frame)
            chunk = audio[written:upto]
            if len(chunk):
                block = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
                block.sample_rate, block.pts = rate, written
                container.mux(sound.encode(block))
                written = upto
        container.mux(video.encode(None))
        container.mux(sound.encode(None))


def readable_json(value) -> str:
    """Indented JSON with each list of numbers on one line (the mouth series would take 900 lines)."""
    text = json.dumps(value, indent=2)
    return re.sub(r"\[\s+([-0-9.,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def render(photos, faces, envelopes, layout, frames: int):
    """Yields [HEIGHT, WIDTH, 3] uint8 RGB frames."""
    specs = {spec.name: spec for spec in CAST}
    for index in range(frames):
        t = index / FPS
        span = next((s for s in layout if s.start <= t < s.end), layout[-1])
        canvas = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
        for name in span.visible:
            spec = specs[name]
            framing = spec.close_up if span.shot == "close-up" else spec.two_shot
            draw(canvas, photos[name], faces[name], spec, framing, t, float(envelopes[name][index]))
        yield canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent,
                        help="folder for two_people.mp4 and two_people.json (default: samples/)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    espeak = require_espeak()

    import av
    import cv2

    from extractors.io import write_atomically

    cv2.setNumThreads(1)
    photos = {spec.name: load_photo(spec.name) for spec in CAST}
    faces = find_faces(photos)
    voices = {spec.name: spec.voice for spec in CAST}
    with tempfile.TemporaryDirectory() as folder:
        synthesized = [synthesize(espeak, voices[line.speaker], line, Path(folder)) for line in SCRIPT]
    rates = {rate for _, rate in synthesized}
    if len(rates) != 1:
        raise RuntimeError(f"espeak-ng gave several sample rates: {rates}")
    rate = rates.pop()
    turns, tracks, total = place_lines([clip for clip, _ in synthesized], rate)
    frames = round(total * FPS / rate)
    duration = frames / FPS
    envelopes = {name: mouth_envelope(track, rate, frames) for name, track in tracks.items()}
    layout = plan_layout(turns, duration)
    mixed = np.sum(list(tracks.values()), axis=0).astype(np.float32)   # turns never overlap

    video_path = args.out_dir / f"{NAME}.mp4"
    write_atomically(video_path, lambda p: encode(p, render(photos, faces, envelopes, layout, frames), mixed, rate))
    truth = {
        "video": {"file": video_path.name, "duration": duration, "frames": frames, "fps": FPS,
                  "width": WIDTH, "height": HEIGHT, "audio_sample_rate": rate,
                  "sha256": hashlib.sha256(video_path.read_bytes()).hexdigest()},
        "made_by": {"script": "samples/make_sample.py", "espeak_ng": espeak_version(espeak),
                    "pyav": av.__version__, "opencv": cv2.__version__},
        "characters": [{"name": s.name, "person": s.person, "photo": s.source, "licence": s.licence,
                        "voice": s.voice, "face_box_in_photo": list(faces[s.name].box)} for s in CAST],
        "turns": [turn.serialize() for turn in turns],
        "layout": [span.serialize() for span in layout],
        # Per-line espeak-ng settings, so a reader can see how each emotion was rendered.
        "prosody": [{"speaker": line.speaker, "pitch": line.pitch, "speed": line.speed,
                     "amplitude": line.amplitude} for line in SCRIPT],
        # How far each mouth is open in every frame (0 closed .. 1 widest): ground truth for lip sync.
        "mouth_opening": {name: [round(float(v), 3) for v in values] for name, values in envelopes.items()},
    }
    json_path = args.out_dir / f"{NAME}.json"
    write_atomically(json_path, lambda p: p.write_text(readable_json(truth)))
    for path in (video_path, json_path):
        path.chmod(0o644)   # write_atomically's temporary files are private; these are for everyone
    log.info("wrote %s (%.2f s, %d frames, %.0f kB) and %s", video_path, duration, frames,
             video_path.stat().st_size / 1024, json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
