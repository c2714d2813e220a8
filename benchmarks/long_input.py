"""Long benchmark inputs (10, 60 minutes) built from the shared clips, in two kinds.

``repeat``: ``visualvoice_interview.mp4`` repeated end to end by stream copy. Cheap, but every 30 s
Whisper window then holds the same sentences twice, so Whisper's compression-ratio guard (a window whose
text gzips better than 2.4 : 1 is taken for a decoding loop) fires on most windows and re-decodes each at
rising temperatures: on 175 s of it, 8 windows took 167 s with 7 fallbacks and 241 words, against 17 s and
782 words with the guard off (measured, under load, 2026-12-02). Real episodes do not repeat themselves
every 17 s, so that row measured the input, not the pipeline.

``montage``: pieces of the shared clips (the interview in three parts, both talking heads, the crowd
clip, the lip-reading demo), each re-encoded once to one format (1280x720 letterboxed, 25 fps, H.264,
48 kHz mono AAC), then joined by stream copy in a fresh random order per round (seed fixed), so a Whisper
window holds different speech, faces change at every cut as in edited TV, and the same people come back.
Each join leaves a 0.2 s hole in the timestamps, as stream-copied broadcast material does.
Written under the work folder, never the repository.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

INTERVIEW = "visualvoice_interview.mp4"
# (source, start, end) in seconds of the source.
PIECES = (
    (INTERVIEW, 0.0, 6.0), (INTERVIEW, 6.0, 12.0), (INTERVIEW, 12.0, 17.4),
    ("retalking_face1.mp4", 0.0, 6.0), ("retalking_face2.mp4", 0.0, 5.0),
    ("facenet_pytorch_video.mp4", 0.0, 4.2), ("deep_lip_reading_demo.mp4", 0.0, 0.88),
)
SIZE, FPS, RATE = (1280, 720), 25, 48000
KINDS = ("montage", "repeat")


def encode_piece(media_dir: Path, source: str, start: float, end: float, out: Path) -> Path:
    """One piece as H.264 + AAC in the common format (letterboxed, not stretched)."""
    from extractors.audio import load_audio
    from extractors.media import iter_frames
    from tests.extractors.edited_media import Cut, _render, placement

    audio = load_audio(media_dir / source, sample_rate=RATE)[int(start * RATE): int(end * RATE)]
    cut = Cut(source, start, end)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"crf": "23", "preset": "veryfast"}
        sound = container.add_stream("aac", rate=RATE, layout="mono")
        place, image = None, None
        frames = iter_frames(media_dir / source, fps=FPS, start=start, end=end)
        for k in range(round((end - start) * FPS)):
            frame = next(frames, None)
            image = frame.image if frame is not None else image
            place = place or placement(cut, (image.shape[1], image.shape[0]), SIZE)
            picture = av.VideoFrame.from_ndarray(_render(image, place, SIZE), format="rgb24")
            picture.pts = k
            container.mux(video.encode(picture))
        frames.close()
        container.mux(video.encode())
        for first in range(0, len(audio), 1024):
            chunk = av.AudioFrame.from_ndarray(audio[None, first:first + 1024].astype(np.float32),
                                               format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = RATE, first
            container.mux(sound.encode(chunk))
        container.mux(sound.encode())
    return out


def join_by_stream_copy(pieces: list[Path], out: Path) -> float:
    """``pieces`` (one format) end to end by packet copy with shifted timestamps; returns the seconds."""
    from tests.extractors.edited_media import stream_copy_period

    offset = Fraction(0)
    periods = {p: Fraction(stream_copy_period(p)).limit_denominator(100000) for p in set(pieces)}
    with av.open(str(out), "w") as output:
        with av.open(str(pieces[0])) as first:
            streams = {s.index: output.add_stream_from_template(s) for s in first.streams}
        for piece in pieces:
            with av.open(str(piece)) as source:
                for packet in source.demux():
                    if packet.dts is None:
                        continue
                    shift = int(round(offset / packet.time_base))
                    packet.pts, packet.dts = packet.pts + shift, packet.dts + shift
                    packet.stream = streams[packet.stream.index]
                    output.mux(packet)
            offset += periods[piece]
    return float(offset)


def build_long_input(media_dir: Path, minutes: float, workdir: Path, kind: str = "montage") -> Path:
    """The ``kind`` input of about ``minutes`` minutes in ``workdir`` (reused when already there)."""
    from tests.extractors.edited_media import repeat_by_stream_copy, stream_copy_period

    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; use {', '.join(KINDS)}")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{kind}_{minutes:g}min.mp4"
    if path.is_file():
        return path
    temporary = path.with_suffix(".part.mp4")
    if kind == "repeat":
        clip = media_dir / INTERVIEW
        repeat_by_stream_copy(clip, int(-(-minutes * 60 // stream_copy_period(clip))), temporary)
    else:
        encoded = []
        for index, (source, start, end) in enumerate(PIECES):
            piece = workdir / f"piece{index}.mp4"
            if not piece.is_file():
                encode_piece(media_dir, source, start, end, piece.with_suffix(".part.mp4")).rename(piece)
            encoded.append(piece)
        rng, order, total = np.random.default_rng(0), [], 0.0
        while total < minutes * 60:
            for i in rng.permutation(len(encoded)):
                if total >= minutes * 60:
                    break
                order.append(encoded[i])
                total += stream_copy_period(encoded[i])
        join_by_stream_copy(order, temporary)
    temporary.rename(path)
    return path
