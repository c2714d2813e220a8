"""Who is talking, on edited clips with known speakers built from the real talking heads in ../shared/media.

The attribution is scored over the ground truth's speech time (the sentences of the audible source) that
the pipeline's segments cover; how much of it they cover is checked on its own, so a recogniser that
drops words shows up as low coverage, not as a wrong speaker.
"""

from __future__ import annotations

import av_clips
import pytest

# The sentences of retalking_face1.mp4 (its own timeline): 0.00-2.69 and 3.34-4.70 s.
FACE1_SENTENCE = 2.69


def attributed_fraction(document: dict, truth: list[tuple[float, float, str | None]]) -> tuple[float, float]:
    """(share of the covered ground-truth speech time whose segment names the right character (None = off
    screen), share of the ground-truth speech time that segments cover)."""
    total = covered = right = 0.0
    for start, end, who in truth:
        total += end - start
        for segment in document["segments"]:
            overlap = max(0.0, min(end, segment["end"]) - max(start, segment["start"]))
            covered += overlap
            right += overlap * (segment["character"] == who)
    return right / max(covered, 1e-9), covered / total


def assert_attributed(document: dict, truth, minimum: float = 0.9, coverage: float = 0.6) -> None:
    right, covered = attributed_fraction(document, truth)
    assert covered >= coverage, (covered, document["segments"])
    assert right >= minimum, (right, document["segments"])


def character_at(document: dict, x_range: tuple[float, float] | None = None, t: float | None = None) -> str:
    """The character whose thumbnail lies in a horizontal band, or whose tracks cover time ``t``."""
    found = []
    for character in document["characters"]:
        x1, _, x2, _ = character["thumbnail"]["box"]
        if x_range is not None and x_range[0] <= (x1 + x2) / 2 < x_range[1]:
            found.append(character["id"])
    assert len(found) == 1, (x_range, document["characters"])
    return found[0]


@pytest.fixture(scope="module")
def sources(media_dir, face1):
    other = av_clips.load_source(media_dir / "retalking_face2.mp4")
    # face1 flipped and three seconds ahead, with a lower voice: other words on its lips at every instant
    second = av_clips.revoiced(av_clips.mirrored(face1, 3.0), -5, "second")
    lips = av_clips.load_source(media_dir / "deep_lip_reading_demo.mp4")
    return {"face1": face1, "other": other, "second": second, "lips": lips}


def test_side_by_side_one_tile_audible(runner, sources, clips_dir):
    """Three talking heads side by side; one tile's own sound at a time, everyone's lips moving."""
    s = sources
    clip = clips_dir / "side_by_side.mp4"
    av_clips.side_by_side(clip, [s["face1"], s["other"], s["second"]],
                          [(0, 3, s["face1"].name), (3, 6, "second"), (6, 9, s["face1"].name), (9, 12, "second")])
    document = runner.run(clip, clips_dir / "side_by_side").document
    assert len(document["characters"]) == 3
    left, right = character_at(document, (0, 360)), character_at(document, (720, 1080))
    # each turn starts in a pause: the sentence of the audible source lies inside its turn
    second_start = 6.08 - 3.0          # "second" runs face1 three seconds ahead; its sentence starts at 3.08
    truth = [(0.0, FACE1_SENTENCE, left), (second_start, second_start + FACE1_SENTENCE, right),
             (6.08, 6.08 + FACE1_SENTENCE, left), (9.16, 9.16 + FACE1_SENTENCE, right)]
    assert_attributed(document, truth)
    middle = character_at(document, (360, 720))
    assert all(seg["character"] != middle for seg in document["segments"]), "the muted tile never speaks"


def test_speakers_cut_to_alone_on_screen(runner, sources, clips_dir):
    s = sources
    clip = clips_dir / "alone.mp4"
    lips_end = 3.0 + 4 * len(s["lips"].frames) / av_clips.FPS        # the lip-reading clip, four times over
    av_clips.cut_alone(clip, [(0, 3, s["face1"], s["face1"]), (3, lips_end, s["lips"], s["lips"]),
                              (lips_end, lips_end + 3, s["face1"], s["face1"])])
    document = runner.run(clip, clips_dir / "alone").document
    assert len(document["characters"]) == 2
    by_start = {}
    for character in document["characters"]:
        by_start[character["thumbnail"]["t"] < 3.0 or character["thumbnail"]["t"] >= lips_end] = character["id"]
    face, lips = by_start[True], by_start[False]
    loop = len(s["lips"].frames) / av_clips.FPS          # "it's that simple" fills its first 0.76 s
    # the third shot shows face1 from 0.44 s into its own timeline: the rest of its first sentence
    truth = [(0.0, FACE1_SENTENCE, face), *[(3.0 + k * loop, 3.0 + k * loop + 0.76, lips) for k in range(4)],
             (lips_end, lips_end + FACE1_SENTENCE - (lips_end % (len(s["face1"].frames) / av_clips.FPS)), face)]
    assert_attributed(document, truth)


def test_speaker_off_screen_is_null(runner, sources, clips_dir):
    """Another face on screen (its lips moving, its sound muted) while face1 is heard: nobody on screen speaks."""
    s = sources
    clip = clips_dir / "offscreen.mp4"
    av_clips.cut_alone(clip, [(0, 3, s["other"], s["face1"]), (3, 6, s["face1"], s["face1"]),
                              (6, 9, s["other"], s["face1"])])
    document = runner.run(clip, clips_dir / "offscreen").document
    face = next(c["id"] for c in document["characters"] if 3.0 <= c["thumbnail"]["t"] < 6.0)
    truth = [(0.0, FACE1_SENTENCE, None), (3.34, 4.70, face), (6.08, 6.08 + FACE1_SENTENCE, None)]
    assert_attributed(document, truth)
    for segment in document["segments"]:
        if segment["character"] is None:
            # off-screen speech still gives the visible listener a timeline, with only the visual modality
            entries = [e for e in document["timeline"] if e["segment"] == segment["id"]]
            assert entries and all(e["role"] == "listener" and e["modalities"] == ["visual"] for e in entries)
