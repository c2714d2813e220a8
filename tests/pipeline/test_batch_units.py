"""``pipeline batch`` without models: inputs, manifests, identities across episodes, corpus summaries, resume state."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.batch.identities import CharacterRef, match_identities
from pipeline.batch.inputs import episode_order, read_input, season_episode
from pipeline.batch.state import BatchLock, FailureLog, failed_for_good, remove_leftovers
from pipeline.batch.worker import is_transient
from pipeline.errors import UserError

DLIB = "dlib-face-descriptor"
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------ inputs


def test_folder_input(tmp_path):
    root = tmp_path / "in"
    touch(root / "Friends" / "Season 2" / "episode 05.mkv")
    touch(root / "Friends" / "S01E10.mp4")
    touch(root / "Friends" / "S01E02.MP4")
    touch(root / "loose.mov")
    touch(root / "Friends" / "notes.txt")
    touch(root / ".hidden" / "x.mp4")
    touch(root / "out" / "Friends" / "S01E02" / "render.mp4")   # the batch's own output inside INPUT
    episodes = read_input(root, exclude=root / "out")
    by_key = {e.key: e for e in episodes}
    assert set(by_key) == {"Friends/episode 05", "Friends/S01E10", "Friends/S01E02", "in/loose"}
    assert (by_key["Friends/S01E10"].season, by_key["Friends/S01E10"].episode) == ("1", "10")
    assert by_key["Friends/episode 05"].season == "2"
    ordered = [e.name for e in sorted(episodes, key=episode_order) if e.show == "Friends"]
    assert ordered == ["S01E02", "S01E10", "episode 05"]


def test_season_episode_names():
    assert season_episode("The.Show.S02E07.720p") == ("2", "7")
    assert season_episode("show 3x12") == ("3", "12")
    assert season_episode("interview_1080p") == (None, None)


def test_empty_folder_and_wrong_input(tmp_path):
    with pytest.raises(UserError, match="no videos"):
        read_input(tmp_path)
    with pytest.raises(UserError, match="neither a folder nor a manifest"):
        read_input(touch(tmp_path / "list.txt"))
    with pytest.raises(UserError, match="does not exist"):
        read_input(tmp_path / "missing")


def test_csv_manifest(tmp_path):
    touch(tmp_path / "videos" / "a.mp4")
    touch(tmp_path / "videos" / "b.mkv")
    touch(tmp_path / "cast.yaml", b"characters: []")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,show,season,episode,cast\n"
                        "videos/a.mp4,My Show,1,3,cast.yaml\n"
                        "\n"
                        f"{tmp_path / 'videos' / 'b.mkv'},,,,\n")
    a, b = read_input(manifest)
    assert (a.show, a.season, a.episode, a.cast) == ("My Show", "1", "3", (tmp_path / "cast.yaml").resolve())
    assert a.video == (tmp_path / "videos" / "a.mp4").resolve()
    assert b.show == "list" and b.cast is None and b.source == "list.csv:4"


def test_bad_manifest_rows_have_line_numbers(tmp_path):
    touch(tmp_path / "a.mp4")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,show\n"
                        "a.mp4,S\n"
                        "missing.mp4,S\n"
                        ",S\n"
                        "a.mp4,S,extra\n")
    with pytest.raises(UserError) as error:
        read_input(manifest)
    message = str(error.value)
    assert "\n" not in message
    assert "m.csv:3: missing.mp4 does not exist" in message
    assert "m.csv:4: no path" in message
    assert "m.csv:5: more fields" in message
    assert "m.csv:2" not in message


def test_jsonl_manifest(tmp_path):
    touch(tmp_path / "a.mp4")
    touch(tmp_path / "b.mp4")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"path": "a.mp4", "show": "X", "episode": 1}\n\n{"path": "b.mp4", "show": "X"}\n')
    assert [e.key for e in read_input(manifest)] == ["X/a", "X/b"]
    manifest.write_text('{"path": "a.mp4"}\n{"path": "b.mp4", "colour": 1}\nnot json\n[1]\n'
                        '{"path": "a.mp4", "cast": "nope.yaml"}\n')
    with pytest.raises(UserError) as error:
        read_input(manifest)
    message = str(error.value)
    assert "m.jsonl:2: unknown column 'colour'" in message
    assert "m.jsonl:3: not JSON" in message
    assert "m.jsonl:4: expected a JSON object" in message
    assert "m.jsonl:5: cast file nope.yaml does not exist" in message


def test_two_videos_one_output_folder_refused(tmp_path):
    touch(tmp_path / "S" / "s1" / "ep.mp4")
    touch(tmp_path / "S" / "s2" / "ep.mp4")
    with pytest.raises(UserError, match="would both write OUT/S/ep"):
        read_input(tmp_path)


# ------------------------------------------------------------------------------------- identities


def person(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """A unit vector at exactly ``distance`` (L2) from unit vector ``v``."""
    noise = np.random.default_rng(seed).normal(size=v.shape)
    noise -= noise @ v * v
    noise /= np.linalg.norm(noise)
    cos = 1 - distance ** 2 / 2
    return cos * v + np.sqrt(1 - cos ** 2) * noise


def ref(episode, character, embedding, name=None, reliable=True, screen=10.0):
    return CharacterRef(episode, character, name, embedding, reliable, screen, 1.0)


def test_same_person_in_two_episodes_is_one_identity_two_people_are_two():
    alice, bob = person(1), person(2)
    characters = [ref("e1", "C0", near(alice, 0.1, 10)), ref("e1", "C1", near(bob, 0.1, 11)),
                  ref("e2", "C0", near(bob, 0.1, 12), screen=30.0), ref("e2", "C1", near(alice, 0.1, 13)),
                  ref("e3", "C0", person(3))]
    result = match_identities("S", characters, DLIB)
    assert result.threshold == pytest.approx(0.40)
    members = [{(m.episode, m.character) for m in i.members} for i in result.identities]
    assert members == [{("e1", "C1"), ("e2", "C0")}, {("e1", "C0"), ("e2", "C1")}]   # bob has more screen time
    assert [i.id for i in result.identities] == ["P0", "P1"]
    assert [(c.episode, c.character, why) for c, why in result.local] == [("e3", "C0", "seen in one episode")]
    document = result.to_dict()
    assert document["identities"][0]["episodes"] == 2 and document["episode_local"][0]["character"] == "C0"


def test_characters_of_one_episode_never_merge():
    alice = person(1)
    characters = [ref("e1", "C0", near(alice, 0.05, 1)), ref("e1", "C1", near(alice, 0.05, 2)),
                  ref("e2", "C0", near(alice, 0.05, 3))]
    result = match_identities("S", characters, DLIB)
    assert len(result.identities) == 1 and len(result.identities[0].members) == 2
    assert len(result.local) == 1


def test_threshold_comes_from_the_identity_stage(monkeypatch):
    from extractors.identity import DlibFaceEmbedder

    alice = person(1)
    characters = [ref("e1", "C0", alice), ref("e2", "C0", near(alice, 0.35, 2))]
    assert len(match_identities("S", characters, DLIB).identities) == 1
    monkeypatch.setattr(DlibFaceEmbedder, "distance_threshold", 0.30)
    result = match_identities("S", characters, DLIB)
    assert result.threshold == pytest.approx(0.30) and not result.identities


def test_cast_names_link_and_separate():
    alice, bob = person(1), person(2)
    # the cast named both "Alice" though their descriptors are far apart (profile in one episode): one person
    named = [ref("e1", "C0", alice, "Alice"), ref("e2", "C0", bob, "Alice")]
    result = match_identities("S", named, DLIB)
    assert len(result.identities) == 1 and result.identities[0].name == "Alice"
    # close descriptors but two different cast names: two people
    twins = [ref("e1", "C0", alice, "Ann"), ref("e2", "C0", near(alice, 0.1, 3), "Beth")]
    assert not match_identities("S", twins, DLIB).identities
    # a name on one member names the identity
    partly = [ref("e1", "C0", alice, "Alice"), ref("e2", "C0", near(alice, 0.1, 4))]
    assert match_identities("S", partly, DLIB).identities[0].name == "Alice"


def test_unreliable_or_missing_faces_stay_local():
    alice = person(1)
    characters = [ref("e1", "C0", alice), ref("e2", "C0", near(alice, 0.05, 1), reliable=False),
                  ref("e3", "C0", None)]
    result = match_identities("S", characters, DLIB)
    assert not result.identities
    reasons = {c.episode: why for c, why in result.local}
    assert reasons["e2"].startswith("no face large enough") and reasons["e3"] == "no face embedding"


# ----------------------------------------------------------------------------------------- corpus


def timeline_document(video: str, characters: list[dict], entries: list[dict], duration: float = 10.0,
                      sha: str = "0" * 64) -> dict:
    """A minimal valid timeline (schema_version 1): characters [{id, embedding, box, screen, speaking}]."""
    tracks = [{"id": f"T{k}", "character": c["id"], "shot": 0,
               "detections": [{"t": 0.0, "box": c.get("box", [0, 0, 100, 100]), "score": 0.99,
                               "expression": [1 / 7] * 7}]} for k, c in enumerate(characters)]
    return {
        "schema_version": 1,
        "video": {"path": video, "sha256": sha, "duration": duration, "fps": 25.0, "width": 640, "height": 360,
                  "has_audio": True, "start_offset": 0.0},
        "model": {"checkpoint": "x", "labels": LABELS, "threshold": 0.5, "thresholds": None,
                  "trained_modalities": ["visual"], "card": {}},
        "characters": [{"id": c["id"], "name": c.get("name"), "tracks": [f"T{k}"], "screen_time": c.get("screen", 5.0),
                        "speaking_time": c.get("speaking", 1.0), "thumbnail": {"t": 0.0, "box": [0, 0, 100, 100]},
                        "embedding": [round(float(x), 5) for x in c["embedding"]]}
                       for k, c in enumerate(characters)],
        "faces": {"analysis_fps": 4.0, "embedder": DLIB, "expression_labels": LABELS,
                  "shots": [{"index": 0, "start": 0.0, "end": duration}], "tracks": tracks},
        "segments": [],
        "timeline": [{"character": e["character"], "start": e["start"], "end": e["end"], "moment": f"M{k}",
                      "segment": None, "role": "listener", "modalities": ["visual"], "untrained_modalities": [],
                      "probs": {label: e["probs"].get(label, 0.0) for label in LABELS}, "labels": []}
                     for k, e in enumerate(entries)],
        "provenance": {"package_version": "0", "created": "2026-01-01T00:00:00+00:00", "config": {}, "models": {},
                       "device": "cpu", "stages": {}, "warnings": []},
    }


def test_summaries_table_and_plot(tmp_path):
    from pipeline.batch.corpus import CHARACTERS_NAME, IDENTITIES_NAME, PLOT_NAME, summarize, write_show
    from pipeline.batch.inputs import Episode
    from pipeline.timeline import validate

    alice = person(1)
    small = [0, 0, 40, 40]   # under the identity stage's reliable face size (64 px)
    docs = {
        "S01E01": timeline_document("a.mp4", [{"id": "C0", "embedding": alice}, {"id": "C1", "embedding": person(2),
                                                                                   "box": small}],
                                    [{"character": "C0", "start": 0, "end": 3, "probs": {"joy": 0.9}},
                                     {"character": "C0", "start": 3, "end": 4, "probs": {"joy": 0.1, "anger": 0.8}}]),
        "S01E02": timeline_document("b.mp4", [{"id": "C0", "embedding": near(alice, 0.1, 5), "name": "Alice"},
                                              {"id": "C1", "embedding": near(person(2), 0.05, 6)}],
                                    [{"character": "C0", "start": 0, "end": 2, "probs": {"sadness": 0.5}}]),
    }
    summaries = []
    for name, document in docs.items():
        validate(document)
        episode = Episode(tmp_path / f"{name}.mp4", "Show", name, "1", name[-1])
        summaries.append(summarize(episode, document))
    first = summaries[0].characters[0]
    assert first.scored_time == 4.0
    assert first.mix["joy"] == pytest.approx((3 * 0.9 + 1 * 0.1) / 4)
    assert first.mix["anger"] == pytest.approx(0.8 / 4)
    assert summaries[0].characters[1].mix is None and not summaries[0].characters[1].ref.reliable

    identities = write_show(tmp_path, "Show", list(reversed(summaries)))   # any order in: season order out
    saved = json.loads((tmp_path / "Show" / IDENTITIES_NAME).read_text())
    assert saved["episodes"] == ["S01E01", "S01E02"]
    assert [(i["name"], [m["episode"] for m in i["members"]]) for i in saved["identities"]] == \
        [("Alice", ["S01E01", "S01E02"])]
    assert {(c["episode"], c["character"]) for c in saved["episode_local"]} == {("S01E01", "C1"), ("S01E02", "C1")}
    assert identities.identity_of("S01E02", "C0") == "P0"
    rows = (tmp_path / "Show" / CHARACTERS_NAME).read_text().splitlines()
    assert rows[0].split(",")[:10] == ["show", "identity", "name", "episode", "season", "episode_number",
                                      "character", "screen_time", "speaking_time", "scored_time"]
    assert rows[0].split(",")[10:] == LABELS
    assert rows[1].startswith("Show,P0,,S01E01,1,1,C0,5.0,1.0,4.0,0.2,")
    assert rows[2].startswith("Show,S01E01/C1,,S01E01,1,1,C1,5.0,1.0,0.0,,")
    assert rows[3].startswith("Show,P0,Alice,S01E02,")
    assert (tmp_path / "Show" / PLOT_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ state


def test_transient_errors():
    import av

    from extractors.errors import MediaError

    assert is_transient(OSError(5, "Input/output error"))
    assert is_transient(MemoryError())
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(MediaError("corrupt"))
    assert not is_transient(av.error.InvalidDataError(1094995529, "Invalid data"))
    assert not is_transient(ValueError("a bug"))


def test_failure_log_tolerates_a_torn_line_and_remembers_permanent_failures(tmp_path):
    video = touch(tmp_path / "bad.mp4", b"garbage")
    log = FailureLog(tmp_path)
    stat = video.stat()
    base = {"path": str(video), "stage": "input", "error": "corrupt", "attempt": 1, "settings": "s",
            "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    log.append({**base, "transient": True, "final": False})
    log.append({**base, "transient": False, "final": True})
    with log.path.open("a") as handle:
        handle.write('{"path": "cut sho')   # a kill mid-line
    last = log.last_by_video()[str(video)]
    assert failed_for_good(last, video, "s")
    assert not failed_for_good(last, video, "other settings")
    assert not failed_for_good({**last, "transient": True}, video, "s")
    video.write_bytes(b"re-downloaded, now fine")
    assert not failed_for_good(last, video, "s")


def test_leftovers_removed_and_lock_exclusive(tmp_path):
    keep = [touch(tmp_path / "S" / "e" / "timeline.json"), touch(tmp_path / "S" / "e" / ".stages" / "visual.json")]
    gone = [touch(tmp_path / "S" / "e" / ".timeline.json.a1b2c3d4.tmp"),
            touch(tmp_path / "S" / "e" / ".stages" / ".visual.npz.zz_9xy12.tmp"), touch(tmp_path / ".index.json.q.tmp"),
            touch(tmp_path / "S" / "e" / f".write-test-{os.getpid()}")]
    assert remove_leftovers(tmp_path) == len(gone)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in gone)
    with BatchLock(tmp_path):
        with pytest.raises(UserError, match="another batch"):
            with BatchLock(tmp_path):
                pass
    with BatchLock(tmp_path):   # released
        pass
