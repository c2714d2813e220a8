"""MEmoR reader on a tiny dataset folder in the layout the dataset ships in."""

from __future__ import annotations

import json

import pytest
import torch

from ramer_core.datasets import collate, load_memor
from ramer_core.datasets.memor import MEMOR_EMOTIONS
from ramer_core.errors import RamerInputError

ANNOTATIONS = [
    {"clip": "c1", "character": 0, "moment": 11.0, "emotion": "joy"},
    {"clip": "c1", "character": 0, "moment": 11.5, "emotion": "surprise"},  # same target as above
    {"clip": "c1", "character": 4, "moment": 13.0, "emotion": "anger"},
    {"clip": "c2", "character": 1, "moment": 1.0, "emotion": "neutral"},
    {"clip": "c2", "character": 6, "moment": 2.0, "emotion": "sadness"},    # amy, not on screen
    {"clip": "c1", "character": 0, "moment": 99.0, "emotion": "joy"},       # outside every segment
]


@pytest.fixture
def memor_root(tmp_path):
    root = tmp_path / "data"
    visual = root / "features" / "visual_features"
    for sub in ("face_names", "face_features", "object_features", "environment_features"):
        (visual / sub).mkdir(parents=True)
    fine = [dict(a, emotion="annoyance") if i == 0 else a for i, a in enumerate(ANNOTATIONS)]
    (root / "anno.json").write_text(json.dumps({"primary": ANNOTATIONS, "fine_grained": fine}))
    data = {
        "c1": {"start": 10.0, "seg_start": [10.0, 12.0], "seg_end": [12.0, 14.0], "speakers": [0, 4],
               "seg_ori_ind": [5, 6], "on_character": [4, 0]},
        "c2": {"start": 0.0, "seg_start": [0.0], "seg_end": [3.0], "speakers": [1], "seg_ori_ind": [0],
               "on_character": [1]},
    }
    (root / "data.json").write_text(json.dumps(data))
    (root / "train_id.txt").write_text("0\n1\n2\n3\n4\n5\n")
    (root / "test_id.txt").write_text("2\n3\n")
    # the official extractors key text by the segment's index in the clip (clip+ii) and audio by its
    # original index (clip+seg_ori_ind[ii]); the c1+5 / c1+6 text entries are decoys of other segments
    text = {"c1+0": [1.0, 2.0, 3.0, 4.0], "c1+1": [5.0, 6.0, 7.0, 8.0], "c2+0": [9.0, 9.0, 9.0, 9.0],
            "c1+5": [-1.0] * 4, "c1+6": [-2.0] * 4}
    audio = {"c1+5": [0.5] * 5, "c2+0": [0.25] * 5}  # c1+6 missing: penny's segment has no audio
    (root / "features" / "text_features.json").write_text(json.dumps(text))
    (root / "features" / "audio_features.json").write_text(json.dumps(audio))
    rows = [[float(r + 1)] * 118 for r in range(8)]
    (root / "features" / "character_features.csv").write_text("\n".join(",".join(map(str, r)) for r in rows))
    # c1: 12 Sheldon faces in segment 0 (frames 1..12), 3 Penny faces in segment 0, 12 Penny in segment 1
    names = [f"{f}_Sheldon.jpg" for f in range(1, 13)] + [f"{f}_Penny.jpg" for f in range(20, 23)] + \
            [f"{f}_Penny.jpg" for f in range(50, 62)]
    (visual / "face_names" / "c1.txt").write_text("\t".join(names) + "\n")
    torch.save(torch.arange(len(names) * 3, dtype=torch.float32).reshape(-1, 3), visual / "face_features" / "c1.pt")
    torch.save(torch.arange(200, dtype=torch.float32).reshape(100, 2), visual / "object_features" / "c1.pt")
    torch.save(-torch.arange(200, dtype=torch.float32).reshape(100, 2), visual / "environment_features" / "c1.pt")
    (visual / "face_names" / "c2.txt").write_text("1_Leonard.jpg\t2_Leonard.jpg\n")  # too few faces
    return root


def test_reads_multi_person_samples(memor_root):
    splits = load_memor(memor_root, valid_fraction=0.0)
    assert splits.label_names == MEMOR_EMOTIONS[:9]
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [4, 0, 2]
    by_key = {s.key: s for s in splits.train}
    assert sorted(by_key) == ["c1:penny:1", "c1:sheldon:0", "c2:amy:0", "c2:leonard:0"]
    sheldon = by_key["c1:sheldon:0"]
    names = splits.label_names
    assert [names[i] for i in sheldon.labels.nonzero().flatten()] == ["joy", "surprise"]
    assert (sheldon.target_person, sheldon.target_segment) == (0, 0)  # characters sorted: sheldon(0), penny(4)
    assert sheldon.present.tolist() == [[[True, True, True], [False, False, False]],
                                        [[False, False, False], [True, True, False]]]
    assert sheldon.text[0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]  # text of segment 0: key c1+0
    assert sheldon.text[1, 1, 0].tolist() == [5.0, 6.0, 7.0, 8.0]  # penny's segment 1: c1+1, not c1+6
    assert sheldon.acoustic[0, 0, 0].tolist() == [0.5] * 5          # audio of segment 0: key c1+5
    faces = torch.arange(27 * 3, dtype=torch.float32).reshape(-1, 3)
    objects = torch.arange(200, dtype=torch.float32).reshape(100, 2)
    end = int(2 * 23.976)
    expected = torch.cat([faces[:12].mean(0), objects[:end].mean(0), -objects[:end].mean(0)])
    assert torch.allclose(sheldon.visual[0, 0, 0], expected)
    assert sheldon.visual.shape == (2, 2, 1, 7)
    assert sheldon.personality.shape == (2, 118)
    column = torch.arange(1, 9, dtype=torch.float32)
    assert sheldon.personality[:, 0].tolist() == pytest.approx((column / column.norm())[[0, 4]].tolist())
    amy = by_key["c2:amy:0"]
    assert amy.target_person == 1 and amy.present[..., 1].sum() == 0 and amy.visual.shape[-1] == 7
    assert amy.missing_acoustic_and_text and not sheldon.missing_acoustic_and_text
    batch = collate(splits.train.samples)
    assert batch.text.shape == (4, 2, 2, 1, 4) and batch.personality_present.tolist()[2:] == [[True, False], [True, True]]


def test_fine_grained_and_seeded_validation(memor_root):
    fine = load_memor(memor_root, emo_type="fine_grained")
    assert len(fine.label_names) == 14 and "annoyance" in fine.label_names
    again = load_memor(memor_root, emo_type="fine_grained")
    keys = lambda split: {sample.key for sample in split.samples}  # noqa: E731
    assert keys(fine.train) == keys(again.train) and keys(fine.valid) == keys(again.valid)  # seeded
    # validation takes whole clips: no clip (so no target) on both sides
    clips = lambda split: {key.split(":")[0] for key in keys(split)}  # noqa: E731
    assert len(clips(fine.valid)) == 1 and not clips(fine.valid) & clips(fine.train)
    assert keys(fine.train) | keys(fine.valid) == keys(load_memor(memor_root, "fine_grained", valid_fraction=0.0).train)


def test_malformed_inputs(memor_root):
    anno = json.loads((memor_root / "anno.json").read_text())
    anno["primary"][2]["emotion"] = "boredom"  # a fine-grained emotion in the primary list
    (memor_root / "anno.json").write_text(json.dumps(anno))
    with pytest.raises(RamerInputError, match="boredom"):
        load_memor(memor_root)
    (memor_root / "anno.json").write_text("{not json")
    with pytest.raises(RamerInputError, match="not valid JSON"):
        load_memor(memor_root)
    with pytest.raises(RamerInputError, match="not found"):
        load_memor(memor_root / "missing")
