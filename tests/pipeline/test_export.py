"""Exports read back with each format's own library: the same people, times (to 10 ms) and text.

Three timelines: a hand-made one with the awkward cases (unicode names, a name with a comma and quotes,
off-screen speech, overlapping turns, newlines and ``-->`` in a transcript, a character who only
listens), the same without any speech, and a real one from running the pipeline on the first shot of
samples/two_people.mp4.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import pytest

from pipeline.export import EXTENSIONS, FORMATS, export
from pipeline.export.common import parse_probabilities
from pipeline.timeline import validate
from tests.conftest import REPO_ROOT

TOLERANCE = 0.010  # seconds
LABELS = ["anger", "joy", "neutral", "sadness"]
FER = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
SAMPLE_CUT_S = 8.1  # the sample's first shot: two people, one line each


def probs(*values: float) -> dict[str, float]:
    return {label: round(v, 4) for label, v in zip(LABELS, values, strict=True)}  # as the pipeline writes


def entry(character, start, end, moment, segment, role, p, labels):
    return {"character": character, "start": start, "end": end, "moment": moment, "segment": segment,
            "role": role, "modalities": ["text", "visual", "acoustic"] if role == "speaker" else ["visual"],
            "untrained_modalities": [], "probs": p, "labels": labels}


def detection(t, box, expression):
    return {"t": t, "box": box, "score": 0.99, "expression": expression}


def tricky_timeline() -> dict:
    """Valid against the schema; every awkward case an export has to survive."""
    segments = [
        {"id": "S0", "start": 0.5, "end": 2.25, "character": "C0", "speaker_confidence": 0.9, "voice": "SPK0",
         "text": "Hola, ¿qué tal?\n\n  Second line --> here & <b>bold</b>", "words": []},
        {"id": "S1", "start": 1.5, "end": 3.0, "character": "C1", "speaker_confidence": 0.7, "voice": "SPK1",
         "text": ' He said "no", then left.', "words": []},  # overlaps S0; whisper's leading space
        {"id": "S2", "start": 4.0, "end": 5.1236, "character": None, "speaker_confidence": 0.0, "voice": "SPK2",
         "text": "Who's there?", "words": []},
        {"id": "S3", "start": 6.0, "end": 7.5, "character": "C0", "speaker_confidence": 1.0, "voice": "SPK0",
         "text": "Nobody. 再见!", "words": []},
    ]
    timeline = []
    for moment, segment, start, end, speaker in (("M0", "S0", 0.5, 2.25, "C0"), ("M1", "S1", 1.5, 3.0, "C1"),
                                                 ("M2", None, 3.0, 4.0, None), ("M3", "S2", 4.0, 5.124, None),
                                                 ("M4", "S3", 6.0, 7.5, "C0")):
        for index, character in enumerate(("C0", "C1", "C2")):
            role = "speaker" if character == speaker else "listener"
            p = probs(0.1 * index + 0.05, 0.8 - 0.1 * index, 0.3333, 0.0)
            timeline.append(entry(character, start, end, moment, segment, role, p,
                                  [label for label, v in p.items() if v >= 0.5]))
    tracks = [
        {"id": "T0", "character": "C0", "shot": 0,
         "detections": [detection(t, [10.0, 20.0, 110.5, 140.25], [0.1, 0.0, 0.0, 0.7, 0.1, 0.05, 0.05])
                        for t in (0.0, 0.52, 1.0, 2.25, 2.5, 6.04)]},
        {"id": "T1", "character": "C1", "shot": 0,
         "detections": [detection(t, [200.0, 30.0, 290.0, 150.0], [0.6, 0.1, 0.0, 0.0, 0.2, 0.0, 0.1])
                        for t in (0.0, 1.0, 2.0, 3.5)]},
        {"id": "T2", "character": "C2", "shot": 0,
         "detections": [detection(t, [400.0, 40.0, 480.0, 140.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
                        for t in (1.0, 1.03, 4.5)]},  # 1.03 s: frame 26 (25.75 rounded)
        {"id": "T3", "character": None, "shot": 0,  # a face no character was made of
         "detections": [detection(7.96, [500.0, 50.0, 540.0, 100.0], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])]},
    ]

    def character(cid, name, tracks):
        return {"id": cid, "name": name, "tracks": tracks, "screen_time": 5.0, "speaking_time": 1.0,
                "thumbnail": None, "embedding": None}

    document = {
        "schema_version": 1,
        "video": {"path": "media/ünïcode clip.mp4", "sha256": "0" * 64, "duration": 8.0, "fps": 25.0,
                  "width": 640, "height": 360, "has_audio": True, "start_offset": 0.0},
        "model": {"checkpoint": "test", "labels": LABELS, "threshold": 0.5, "thresholds": None,
                  "trained_modalities": ["text", "visual", "acoustic"], "card": {}},
        "characters": [character("C0", "José Ñúñez 🎬", ["T0"]), character("C1", 'O\'Brien, "Bob"', ["T1"]),
                       character("C2", None, ["T2"])],  # C2 only listens
        "faces": {"analysis_fps": 4.0, "embedder": "test", "expression_labels": FER,
                  "shots": [{"index": 0, "start": 0.0, "end": 8.0}], "tracks": tracks},
        "segments": segments,
        "timeline": timeline,
        "provenance": {"package_version": "0", "created": "2026-01-01T00:00:00+00:00", "config": {},
                       "models": {}, "device": "cpu", "stages": {}, "warnings": []},
    }
    validate(document)
    return document


def silent_timeline() -> dict:
    document = tricky_timeline()
    document["segments"] = []
    for item in document["timeline"]:
        item.update(segment=None, role="listener", modalities=["visual"])
    validate(document)
    return document


def cut_clip(source: Path, path: Path, end: float) -> Path:
    """The first ``end`` seconds of ``source``, re-encoded (PyAV has no stream-copy cut here)."""
    import av_clips

    from extractors.audio import SAMPLE_RATE, load_audio
    from extractors.media import iter_frames

    frames = [frame.image for frame in iter_frames(source, None) if frame.t < end - 1e-6]
    return av_clips.write_clip(path, frames, load_audio(source)[: int(end * SAMPLE_RATE)])


@pytest.fixture(scope="module")
def sample_run(runner, tmp_path_factory):
    """(clip, output folder, timeline path) of one pipeline run on the sample's first shot."""
    folder = tmp_path_factory.mktemp("sample_cut")
    clip = cut_clip(REPO_ROOT / "samples" / "two_people.mp4", folder / "two_people_cut.mp4", SAMPLE_CUT_S)
    result = runner.run(clip, folder / "out")
    return clip, folder / "out", result.timeline_path


@pytest.fixture(scope="module", params=["tricky", "silent", "real"])
def case(request, tmp_path_factory):
    """(timeline, {format: file}) with every format written once per timeline."""
    if request.param == "real":
        _, _, timeline_path = request.getfixturevalue("sample_run")
        document = json.loads(timeline_path.read_text(encoding="utf-8"))
        assert document["segments"] and len(document["characters"]) == 2, "the sample's two people, talking"
    else:
        document = tricky_timeline() if request.param == "tricky" else silent_timeline()
        timeline_path = tmp_path_factory.mktemp(request.param) / "timeline.json"
        timeline_path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    folder = tmp_path_factory.mktemp(f"{request.param}_exports")
    written = export(document, list(FORMATS), folder, timeline_path=timeline_path)
    assert [p.name for p in written] == [f"timeline{EXTENSIONS[name]}" for name in FORMATS]
    return document, dict(zip(FORMATS, written, strict=True))


# --- what the files should say, derived from the timeline independently of the writers -------------

def name_of(document: dict, character: str) -> str:
    return next((c["name"] or c["id"] for c in document["characters"] if c["id"] == character), character)


def speaker_of(document: dict, segment: dict) -> str:
    if segment["character"] is None:
        return f"Off-screen ({segment['voice']})"
    return name_of(document, segment["character"])


def subtitle_text(text: str) -> str:
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


def in_order(document: dict) -> list[dict]:
    return sorted(document["segments"], key=lambda s: (s["start"], s["end"], s["id"]))


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE


def vtt_seconds(stamp: str) -> float:
    hours, minutes, rest = ([0] + stamp.split(":"))[-3:]
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


def speakers(document: dict) -> set[str]:
    names = {name_of(document, c["id"]) for c in document["characters"]}
    return names | {speaker_of(document, s) for s in document["segments"]}


def tiers_of(names, base: str) -> list[str]:
    """The tier ``base`` and its overflow lanes ``base #2``, ..."""
    return [n for n in names if n == base or n.startswith(f"{base} #")]


def tier_bases(names) -> set[str]:
    return {re.sub(r" #\d+$", "", name) for name in names}


def expected_tiers(document: dict) -> set[str]:
    """A speech tier per speaker (even one who never speaks); role, emotion, confidence per scored character."""
    scored = {name_of(document, e["character"]) for e in document["timeline"]}
    return speakers(document) | {f"{who} {kind}" for who in scored for kind in ("role", "emotion", "confidence")}


def spans(items) -> list[tuple[float, float, str]]:
    return sorted((round(a, 3), round(b, 3), v) for a, b, v in items)


def expected_speech(document: dict, who: str) -> list[tuple[float, float, str]]:
    return spans((s["start"], s["end"], s["text"]) for s in document["segments"] if speaker_of(document, s) == who)


def expected_moments(document: dict, character: str, field: str) -> list[tuple[float, float, str]]:
    def value(item):
        if field == "role":
            return item["role"]
        if field == "emotion":
            return ", ".join(item["labels"]) or "-"
        return item["probs"]
    return [(round(e["start"], 3), round(e["end"], 3), value(e)) for e in
            sorted(document["timeline"], key=lambda e: (e["start"], e["end"])) if e["character"] == character]


def assert_no_overlaps(intervals) -> None:
    ordered = sorted(intervals)
    for (_, end, *_), (start, *_) in zip(ordered, ordered[1:], strict=False):
        assert start >= end, ordered


# --- the round trips -----------------------------------------------------------------------------------

def test_srt(case):
    import srt

    document, files = case
    cues = list(srt.parse(files["srt"].read_text(encoding="utf-8")))
    assert len(cues) == len(document["segments"])
    for cue, segment in zip(cues, in_order(document), strict=True):
        assert close(cue.start.total_seconds(), segment["start"]) and close(cue.end.total_seconds(), segment["end"])
        assert cue.content == f"{speaker_of(document, segment)}: {subtitle_text(segment['text'])}"


def test_vtt(case):
    import webvtt

    document, files = case
    captions = webvtt.read(str(files["vtt"])).captions
    assert len(captions) == len(document["segments"])
    for caption, segment in zip(captions, in_order(document), strict=True):
        assert caption.identifier == segment["id"]
        assert close(vtt_seconds(caption.start), segment["start"]) and close(vtt_seconds(caption.end), segment["end"])
        assert caption.voice is not None, "a voice span on every cue"
        assert html.unescape(caption.voice) == speaker_of(document, segment)
        assert html.unescape(caption.text) == subtitle_text(segment["text"])
    assert "-->" not in "".join(c.raw_text for c in captions), "a --> in a cue's text would break the cue"


def test_rttm(case):
    from pyannote.database.util import load_rttm

    document, files = case
    if not document["segments"]:
        assert files["rttm"].read_text() == ""
        return
    uri = Path(document["video"]["path"]).stem.replace(" ", "_")
    annotations = load_rttm(str(files["rttm"]))
    assert set(annotations) == {uri}
    turns = sorted((round(s.start, 3), round(s.end, 3), label)
                   for s, _, label in annotations[uri].itertracks(yield_label=True))
    wanted = sorted((s["start"], s["end"], s["voice"] if s["character"] is None
                     else "_".join(speaker_of(document, s).split())) for s in document["segments"])
    assert len(turns) == len(wanted)
    for (start, end, label), (w_start, w_end, w_label) in zip(turns, wanted, strict=True):
        assert close(start, w_start) and close(end, w_end) and label == w_label


def test_eaf(case):
    from pympi import Elan

    document, files = case
    eaf = Elan.Eaf(str(files["eaf"]))
    names = eaf.get_tier_names()
    assert tier_bases(names) == expected_tiers(document)
    for who in speakers(document):
        speech = [a for tier in tiers_of(names, who) for a in eaf.get_annotation_data_for_tier(tier)]
        assert spans((a / 1000, b / 1000, v) for a, b, v in speech) == expected_speech(document, who)
    for character in document["characters"]:
        label = name_of(document, character["id"])
        for kind in ("role", "emotion", "confidence"):
            tiers = tiers_of(names, f"{label} {kind}")
            got = sorted((a / 1000, b / 1000, v) for t in tiers for a, b, v, *_ in eaf.get_annotation_data_for_tier(t))
            if kind == "confidence":
                got = [(a, b, parse_probabilities(v)) for a, b, v in got]
            assert got == expected_moments(document, character["id"], kind), (label, kind)
            for tier in tiers:
                parameters = eaf.get_parameters_for_tier(tier)
                if kind == "role":
                    assert "PARENT_REF" not in parameters
                    assert_no_overlaps(eaf.get_annotation_data_for_tier(tier))
                else:  # a dependent tier, one label per parent moment
                    assert parameters["PARENT_REF"] == tier.replace(kind, "role")
                    constraint = eaf.linguistic_types[parameters["LINGUISTIC_TYPE_REF"]]["CONSTRAINTS"]
                    assert constraint == "Symbolic_Association"
    for tier in names:
        assert_no_overlaps(eaf.get_annotation_data_for_tier(tier))
    (media,) = eaf.get_linked_files()
    video = Path(document["video"]["path"])
    assert media["MEDIA_URL"].startswith("file:///") and media["MIME_TYPE"] == "video/mp4"
    linked = Path(media["MEDIA_URL"].removeprefix("file://"))
    assert linked.name == video.name
    if video.is_absolute():  # the real run recorded where the clip is
        assert linked == video and linked.is_file()
    assert media["RELATIVE_MEDIA_URL"].startswith(("./", "../"))
    assert (files["eaf"].parent / media["RELATIVE_MEDIA_URL"]).resolve() == linked.resolve()


def test_textgrid(case):
    from praatio import textgrid

    document, files = case
    grid = textgrid.openTextgrid(str(files["textgrid"]), includeEmptyIntervals=False)
    names = grid.tierNames
    assert tier_bases(names) == expected_tiers(document)
    assert grid.maxTimestamp >= document["video"]["duration"]
    for who in speakers(document):
        entries = [e for tier in tiers_of(names, who) for e in grid.getTier(tier).entries]
        wanted = [(a, b, text.strip()) for a, b, text in expected_speech(document, who)]  # praatio strips
        assert spans((e.start, e.end, e.label) for e in entries) == wanted
    for character in document["characters"]:
        label = name_of(document, character["id"])
        for kind in ("role", "emotion", "confidence"):
            got = sorted((round(e.start, 3), round(e.end, 3), e.label)
                         for tier in tiers_of(names, f"{label} {kind}") for e in grid.getTier(tier).entries)
            if kind == "confidence":
                got = [(a, b, parse_probabilities(v)) for a, b, v in got]
            assert got == expected_moments(document, character["id"], kind), (label, kind)


def test_csv(case):
    document, files = case
    with files["csv"].open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    labels = document["model"]["labels"]
    assert reader.fieldnames[:10] == ["moment", "character", "name", "start", "end", "role", "segment",
                                      "modalities", "untrained_modalities", "labels"]
    assert reader.fieldnames[10:] == labels
    assert len(rows) == len(document["timeline"])
    for row, item in zip(rows, document["timeline"], strict=True):
        assert (row["moment"], row["character"], row["role"]) == (item["moment"], item["character"], item["role"])
        assert row["name"] == name_of(document, item["character"])
        assert close(float(row["start"]), item["start"]) and close(float(row["end"]), item["end"])
        assert row["segment"] == (item["segment"] or "")
        assert row["modalities"].split(";") == item["modalities"]
        assert [m for m in row["untrained_modalities"].split(";") if m] == item["untrained_modalities"]
        assert [x for x in row["labels"].split(";") if x] == item["labels"]
        assert {label: float(row[label]) for label in labels} == item["probs"]


def test_faces_csv(case):
    document, files = case
    with files["faces-csv"].open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    py_feat = ["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight", "FaceScore",
               "anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]
    header = reader.fieldnames
    assert header[0] == "frame" and {"approx_time", "Identity", "speaking", "input"} <= set(header)
    assert [c for c in header if c in py_feat] == py_feat, "py-feat's Fex column names, in its order"
    detections = [(track, d) for track in document["faces"]["tracks"] for d in track["detections"]]
    assert len(rows) == len(detections)
    by_key = {(row["track"], round(float(row["approx_time"]), 3)): row for row in rows}
    fer = document["faces"]["expression_labels"]
    fps = document["video"]["fps"]
    for track, d in detections:
        row = by_key[(track["id"], round(d["t"], 3))]
        assert int(row["frame"]) == round(d["t"] * fps)
        assert row["Identity"] == (track["character"] or "")
        x1, y1, x2, y2 = d["box"]
        assert [float(row[c]) for c in py_feat[:5]] == pytest.approx([x1, y1, x2 - x1, y2 - y1, d["score"]], abs=0.06)
        for fer_label, feat_label in (("angry", "anger"), ("happy", "happiness"), ("sad", "sadness"),
                                      ("neutral", "neutral"), ("fear", "fear")):
            assert float(row[feat_label]) == d["expression"][fer.index(fer_label)]
        talking = any(s["character"] is not None and s["character"] == track["character"]
                      and s["start"] <= d["t"] <= s["end"] for s in document["segments"])
        assert row["speaking"] == str(talking)
    frames = [int(row["frame"]) for row in rows]
    assert frames == sorted(frames)


def test_tricky_cases_show(tmp_path):
    """The hand-made cases are really in the files (a guard against a timeline that tests nothing)."""
    document = tricky_timeline()
    out = export(document, ["srt", "vtt", "eaf", "faces-csv"], tmp_path, timeline_path=tmp_path / "t.json")
    srt_text, vtt_text, eaf_text, faces = (p.read_text(encoding="utf-8") for p in out)
    assert "José Ñúñez 🎬: Hola" in srt_text and "Off-screen (SPK2): Who's there?" in srt_text
    assert "<v O'Brien, \"Bob\">" in vtt_text and "--&gt;" in vtt_text and "&lt;b&gt;" in vtt_text
    assert "00:00:05.124" in vtt_text, "5.1236 s to the millisecond"
    assert "C2 role" in eaf_text and "José Ñúñez 🎬 role #2" in eaf_text, "listener-only tier; overlap lane"
    assert faces.count(",True,") == 5, "C0 at 0.52, 1.0, 2.25 and 6.04 s, C1 at 2.0 s"



def test_same_names_stay_apart(tmp_path):
    document = tricky_timeline()
    document["characters"][1]["name"] = document["characters"][0]["name"]
    (srt_file,) = export(document, ["srt"], tmp_path / "x.srt")
    text = srt_file.read_text(encoding="utf-8")
    assert "José Ñúñez 🎬 (C0): Hola" in text and 'José Ñúñez 🎬 (C1):  He said' not in text
    assert "José Ñúñez 🎬 (C1): He said" in text


def test_zero_length_segment(tmp_path, caplog):
    """ELAN and Praat cannot hold an interval without length: left out, with a warning; subtitles keep it."""
    from praatio import textgrid

    document = tricky_timeline()
    document["segments"][2]["end"] = document["segments"][2]["start"] + 0.0002  # 0 ms at ms precision
    srt_file, grid_file = export(document, ["srt", "textgrid"], tmp_path, timeline_path=tmp_path / "t.json")
    assert "Who's there?" in srt_file.read_text(encoding="utf-8")
    grid = textgrid.openTextgrid(str(grid_file), includeEmptyIntervals=False)
    assert grid.getTier("Off-screen (SPK2)").entries == ()
    assert "segment S2 has no length" in caplog.text

# --- the command line ----------------------------------------------------------------------------------

def export_cli(*args) -> int:
    from pipeline.cli import main

    return main(["-q", "export", *map(str, args)])


@pytest.fixture
def timeline_file(tmp_path) -> Path:
    path = tmp_path / "episode.json"
    path.write_text(json.dumps(tricky_timeline(), ensure_ascii=False), encoding="utf-8")
    return path


def test_cli_writes_beside_the_timeline_or_to_o(timeline_file, tmp_path, capsys):
    assert export_cli(timeline_file, "--format", "srt,eaf") == 0
    assert (tmp_path / "episode.srt").is_file() and (tmp_path / "episode.eaf").is_file()
    assert export_cli(timeline_file, "-f", "csv", "-o", tmp_path / "one" / "table.csv") == 0
    assert (tmp_path / "one" / "table.csv").read_text(encoding="utf-8").startswith("moment,character,name")
    assert export_cli(timeline_file, "-f", "all", "-o", tmp_path / "every") == 0
    assert sorted(p.name for p in (tmp_path / "every").iterdir()) == sorted(
        f"episode{ext}" for ext in EXTENSIONS.values())
    assert capsys.readouterr().err == "", "-q: nothing but errors"


def _broken_json(path: Path) -> Path:
    path.write_text('{"schema_version": 1, "video": ', encoding="utf-8")
    return path


def _not_a_timeline(path: Path) -> Path:
    document = tricky_timeline()
    del document["segments"][0]["text"]
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.mark.parametrize("problem, phrase", [
    ("broken JSON", "not a readable JSON file"),
    ("not a timeline", "does not follow"),
    ("missing file", "does not exist"),
    ("unknown format", "unknown export format 'docx'"),
    ("unwritable output", "cannot write"),
    ("several formats to a file", "is not a folder"),
])
def test_cli_bad_input(problem, phrase, timeline_file, tmp_path, capsys):
    out = tmp_path / "out.srt"
    args = [timeline_file, "-f", "srt", "-o", out]
    if problem == "broken JSON":
        args[0] = _broken_json(tmp_path / "broken.json")
    elif problem == "not a timeline":
        args[0] = _not_a_timeline(tmp_path / "other.json")
    elif problem == "missing file":
        args[0] = tmp_path / "nope.json"
    elif problem == "unknown format":
        args[2] = "srt,docx"
    elif problem == "unwritable output":
        args[4] = out = timeline_file / "out.srt"  # under a file: even root cannot write there
    else:
        out.write_text("a file, not a folder")
        args[2] = "srt,vtt"
    before = sorted(tmp_path.iterdir())
    code = export_cli(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert phrase in err, err
    assert sorted(tmp_path.iterdir()) == before, "nothing written, no temporary file left"


def test_a_failed_write_keeps_the_old_file(timeline_file, tmp_path, monkeypatch):
    import pipeline.export.tables as tables

    target = tmp_path / "table.csv"
    target.write_text("the old table\n")

    class Failing:
        def __init__(self, handle):
            self.handle = handle

        def writerow(self, row):
            self.handle.write("half a header")

        def writerows(self, rows):
            raise RuntimeError("disk full, say")

    monkeypatch.setattr(tables.csv, "writer", Failing)
    with pytest.raises(RuntimeError):
        export(tricky_timeline(), ["csv"], target)
    assert target.read_text() == "the old table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.json", "table.csv"]


def test_run_export(sample_run, tmp_path, capsys):
    """``run --export``: a second run reuses every stage, then writes the formats beside timeline.json."""
    from pipeline.cli import main

    clip, out, timeline_path = sample_run
    assert main(["-q", "run", str(clip), "-o", str(out), "--export", "srt,csv"]) == 0, capsys.readouterr().err
    document = json.loads(timeline_path.read_text(encoding="utf-8"))
    again = export(document, ["srt", "csv"], tmp_path, timeline_path=timeline_path)
    for path in again:
        assert (out / path.name).read_bytes() == path.read_bytes()
    fresh = tmp_path / "fresh"
    assert main(["-q", "run", str(clip), "-o", str(fresh), "--export", "srt,pdf"]) == 2
    assert "unknown export format 'pdf'" in capsys.readouterr().err
    assert not fresh.exists(), "an unknown format is refused before any work"
