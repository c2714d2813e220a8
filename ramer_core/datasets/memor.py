"""MEmoR (Shen et al., ACM MM 2020) in the layout the dataset ships in (sunlightsgy/MEmoR, RAMer).

``root`` is the dataset's ``data`` folder::

    anno.json        {"primary": [ann, ...], "fine_grained": [ann, ...]}
                     ann = {"clip": "s01e01_c03", "character": 2, "moment": 123.4, "emotion": "joy"}
    data.json        {clip: {"start": s, "seg_start": [..], "seg_end": [..], "speakers": [char per seg],
                             "seg_ori_ind": [index per seg], "on_character": [chars on screen]}}
    train_id.txt     indices into the annotation list, one per line (test_id.txt likewise)
    features/audio_features.json   {"<clip>+<seg_ori_ind[ii]>": [6373 floats]}  (openSMILE; may lack keys)
    features/text_features.json    {"<clip>+<ii>": [1024 floats]}  (BERT-large; ii = segment index in the clip)
    features/character_features.csv  one line of 118 comma-separated floats per character
    features/visual_features/face_names/<clip>.txt          tab-separated "<frame>_<Name>.jpg"
    features/visual_features/face_features/<clip>.pt        [faces, 1024]
    features/visual_features/object_features/<clip>.pt      [frames, 1230]
    features/visual_features/environment_features/<clip>.pt [frames, 2048]

Characters are indices into :data:`MEMOR_SPEAKERS`. As in the reference feature extractors, a
moment holds every on-screen character (plus the target) in sorted order, each with every
segment of the clip: per (character, segment) one feature vector per modality (T = 1). Text and
acoustic are present only for the segment's speaker; visual when more than 10 of the
character's faces fall in the segment (face features averaged, object and environment features
averaged over the segment's frames at 23.976 fps), and not at all for a clip with 10 faces or
fewer. Personality vectors are normalised per column over the characters (as the reference does).

Multi-label targets: the samples are the distinct (clip, target character, target segment)
triples, and a sample's labels are every emotion annotated for that character at a moment in that
segment. Emotions: the first 9 of :data:`MEMOR_EMOTIONS` for ``primary``, all 14 for
``fine_grained``. Validation is a seeded 20 % of the training ids (the reference's split).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from ramer_core.datasets.common import DatasetSplits, FeatureDims, RamerDataset, RamerSample, check_file
from ramer_core.datasets.mosei import safe_torch_load
from ramer_core.errors import RamerInputError

log = logging.getLogger(__name__)

MEMOR_EMOTIONS = ("neutral", "joy", "anger", "disgust", "sadness", "surprise", "fear", "anticipation", "trust",
                  "serenity", "interest", "annoyance", "boredom", "distraction")
MEMOR_SPEAKERS = ("sheldon", "leonard", "howard", "rajesh", "penny", "bernadette", "amy", "others")
FPS = 23.976
FACE_THRESHOLD = 10  # a segment (or clip) needs more faces than this for a visual feature
EMO_TYPE_KEYS = {"primary": ("primary",), "fine_grained": ("fine_grained", "fine-grained", "finegrained")}


def _read_json(path: Path):
    check_file(path, "MEmoR file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RamerInputError(f"{path}: not valid JSON ({error})") from None


def _read_ids(path: Path) -> list[int]:
    check_file(path, "MEmoR split id file")
    try:
        return [int(line) for line in path.read_text().split()]
    except ValueError:
        raise RamerInputError(f"{path}: expected one integer annotation index per line") from None


def _read_personality(path: Path) -> torch.Tensor:
    check_file(path, "MEmoR character features")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.strip().split(",")])
        except ValueError:
            raise RamerInputError(f"{path}:{number}: expected comma-separated floats") from None
    if len({len(r) for r in rows}) != 1 or len(rows) < len(MEMOR_SPEAKERS):
        raise RamerInputError(f"{path}: expected {len(MEMOR_SPEAKERS)} rows of equal length (118 floats)")
    return torch.nn.functional.normalize(torch.tensor(rows), dim=0)


class _MemorFeatures:
    """Per (clip, characters) feature grids, built once per clip and shared by its samples."""

    def __init__(self, root: Path, data: dict, text: dict, audio: dict) -> None:
        self.root, self.data, self.text, self.audio = root, data, text, audio
        self.text_dim = len(next(iter(text.values()))) if text else 0
        self.audio_dim = len(next(iter(audio.values()))) if audio else 0
        self.visual_dim: int | None = None
        self.cache: dict[tuple, tuple] = {}
        self.visual_dir = root / "features" / "visual_features"

    def _vector(self, table: dict, key: str, dim: int, what: str) -> torch.Tensor:
        vector = torch.tensor(table[key], dtype=torch.float32)
        if vector.shape != (dim,):
            raise RamerInputError(f"{self.root}: {what} feature {key!r} has {tuple(vector.shape)} values, "
                                  f"expected {dim}")
        return vector

    def _visual(self, clip: str, characters: list[int], segments: int) -> tuple[torch.Tensor | None, torch.Tensor]:
        info = self.data[clip]
        valid = torch.zeros(len(characters), segments, dtype=torch.bool)
        names_file = self.visual_dir / "face_names" / f"{clip}.txt"
        check_file(names_file, "MEmoR face-name list")
        lines = names_file.read_text().splitlines()
        names = lines[0].strip().split("\t") if lines else []
        if len(names) <= FACE_THRESHOLD:
            return None, valid
        faces = safe_torch_load(check_file(self.visual_dir / "face_features" / f"{clip}.pt", "MEmoR face features"),
                                "MEmoR face feature file")
        objects = safe_torch_load(check_file(self.visual_dir / "object_features" / f"{clip}.pt",
                                             "MEmoR object features"), "MEmoR object feature file")
        scene = safe_torch_load(check_file(self.visual_dir / "environment_features" / f"{clip}.pt",
                                           "MEmoR environment features"), "MEmoR environment feature file")
        for tensor, what in ((faces, "face"), (objects, "object"), (scene, "environment")):
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2:
                raise RamerInputError(f"{self.visual_dir}: {what} features of {clip} are not a 2-D tensor")
        if faces.shape[0] != len(names):
            raise RamerInputError(f"{self.visual_dir}: {clip} has {len(names)} face names but "
                                  f"{faces.shape[0]} face features")
        dim = faces.shape[1] + objects.shape[1] + scene.shape[1]
        if self.visual_dim is None:
            self.visual_dim = dim
        elif dim != self.visual_dim:
            raise RamerInputError(f"{self.visual_dir}: visual feature size of {clip} is {dim}, "
                                  f"others have {self.visual_dim}")
        parsed = []
        for name in names:
            try:
                frame, person = name[:-4].split("_", 1)
                parsed.append((int(frame), person.lower()))
            except ValueError:
                raise RamerInputError(f"{names_file}: face name {name!r} is not '<frame>_<Name>.jpg'") from None
        grid = torch.zeros(len(characters), segments, dim)
        for p, character in enumerate(characters):
            for s in range(segments):
                begin = int((info["seg_start"][s] - info["start"]) * FPS)
                end = int((info["seg_end"][s] - info["start"]) * FPS)
                mine = [j for j, (frame, person) in enumerate(parsed)
                        if begin <= frame <= end and person == MEMOR_SPEAKERS[character]]
                if len(mine) > FACE_THRESHOLD:
                    grid[p, s] = torch.cat([faces[mine].float().mean(0), objects[begin:end].float().mean(0),
                                            scene[begin:end].float().mean(0)])
                    valid[p, s] = True
        return grid[:, :, None], valid  # [P, S, 1, Dv]

    def grid(self, clip: str, characters: list[int]) -> tuple:
        key = (clip, tuple(characters))
        if key in self.cache:
            return self.cache[key]
        info = self.data[clip]
        segments = len(info["seg_start"])
        text = torch.zeros(len(characters), segments, 1, self.text_dim)
        audio = torch.zeros(len(characters), segments, 1, self.audio_dim)
        present = torch.zeros(len(characters), segments, 3, dtype=torch.bool)
        for p, character in enumerate(characters):
            for s, speaker in enumerate(info["speakers"]):
                if speaker != character:
                    continue
                # as the official extractors: text keyed by the segment index, audio by its original index
                text_key, audio_key = f"{clip}+{s}", f"{clip}+{info['seg_ori_ind'][s]}"
                if text_key in self.text:
                    text[p, s, 0] = self._vector(self.text, text_key, self.text_dim, "text")
                    present[p, s, 0] = True
                if audio_key in self.audio:
                    audio[p, s, 0] = self._vector(self.audio, audio_key, self.audio_dim, "audio")
                    present[p, s, 2] = True
        visual_grid, visual_valid = self._visual(clip, characters, segments)
        present[..., 1] = visual_valid
        self.cache[key] = (text, visual_grid, audio, present)
        return self.cache[key]


def _check_clip(data: dict, clip: str, root: Path) -> None:
    info = data.get(clip)
    needed = ("start", "seg_start", "seg_end", "speakers", "seg_ori_ind", "on_character")
    if not isinstance(info, dict) or any(k not in info for k in needed):
        raise RamerInputError(f"{root / 'data.json'}: clip {clip!r} is missing or lacks one of {needed}")
    lengths = {len(info[k]) for k in ("seg_start", "seg_end", "speakers", "seg_ori_ind")}
    if len(lengths) != 1:
        raise RamerInputError(f"{root / 'data.json'}: clip {clip!r} has segment lists of different lengths")


def load_memor(root: str | Path, emo_type: str = "primary", valid_fraction: float = 0.2,
               seed: int = 2020) -> DatasetSplits:
    """Read MEmoR's train (split into train/valid) and test annotations into multi-person samples."""
    root = Path(root)
    if not root.is_dir():
        raise RamerInputError(f"MEmoR folder not found: {root} (give the dataset's data/ folder)")
    if emo_type not in EMO_TYPE_KEYS:
        raise RamerInputError(f"unknown MEmoR emotion set {emo_type!r}; use primary or fine_grained")
    annotations = _read_json(root / "anno.json")
    key = next((k for k in EMO_TYPE_KEYS[emo_type] if isinstance(annotations, dict) and k in annotations), None)
    if key is None:
        raise RamerInputError(f"{root / 'anno.json'}: no {emo_type!r} annotation list")
    annotations = annotations[key]
    label_names = MEMOR_EMOTIONS[:9] if emo_type == "primary" else MEMOR_EMOTIONS
    data = _read_json(root / "data.json")
    features = _MemorFeatures(root, data, _read_json(root / "features" / "text_features.json"),
                              _read_json(root / "features" / "audio_features.json"))
    personality = _read_personality(root / "features" / "character_features.csv")

    def build(ids: list[int], name: str) -> RamerDataset:
        targets: dict[tuple, torch.Tensor] = {}
        skipped = 0
        for i in ids:
            if not 0 <= i < len(annotations):
                raise RamerInputError(f"{root}: annotation index {i} out of range ({len(annotations)} annotations)")
            ann = annotations[i]
            try:
                clip, character, moment, emotion = ann["clip"], int(ann["character"]), float(ann["moment"]), ann["emotion"]
            except (KeyError, TypeError, ValueError):
                raise RamerInputError(f"{root / 'anno.json'}: annotation {i} lacks clip/character/moment/emotion") from None
            if emotion not in label_names:
                raise RamerInputError(f"{root / 'anno.json'}: annotation {i} has emotion {emotion!r}, "
                                      f"not one of the {len(label_names)} {emo_type} emotions")
            if not 0 <= character < len(MEMOR_SPEAKERS):
                raise RamerInputError(f"{root / 'anno.json'}: annotation {i} has character {character}")
            _check_clip(data, clip, root)
            info = data[clip]
            segment = next((s for s in range(len(info["seg_start"]))
                            if info["seg_start"][s] <= moment < info["seg_end"][s]), None)
            if segment is None:
                skipped += 1
                continue
            labels = targets.setdefault((clip, character, segment), torch.zeros(len(label_names)))
            labels[label_names.index(emotion)] = 1.0
        if skipped:
            log.warning("%s: %d annotations fall outside every segment of their clip and were skipped", name, skipped)
        samples = []
        for (clip, character, segment), labels in targets.items():
            characters = sorted(set(data[clip]["on_character"]) | {character})
            text, visual, audio, present = features.grid(clip, characters)
            if visual is None:
                visual = torch.zeros(len(characters), text.shape[1], 1, features.visual_dim or 0)
            samples.append(RamerSample(
                text=text, visual=visual, acoustic=audio,
                text_mask=present[..., 0, None].clone(), visual_mask=present[..., 1, None].clone(),
                acoustic_mask=present[..., 2, None].clone(), present=present, labels=labels,
                target_person=characters.index(character), target_segment=segment,
                personality=personality[characters], personality_present=torch.ones(len(characters), dtype=torch.bool),
                key=f"{clip}:{MEMOR_SPEAKERS[character]}:{segment}",
            ))
        return samples

    train_ids = _read_ids(root / "train_id.txt")
    test_ids = _read_ids(root / "test_id.txt")
    # Validation takes whole clips: annotations of one (clip, character, segment) target, and the
    # characters of one clip, must not end up on both sides.
    def clip_of(i: int):
        ann = annotations[i] if 0 <= i < len(annotations) else None
        return ann.get("clip") if isinstance(ann, dict) else None  # malformed ones fail in build()

    clips = sorted({str(clip_of(i)) for i in train_ids})
    order = np.random.RandomState(seed).permutation(len(clips))
    n_valid = max(1, round(len(clips) * valid_fraction)) if valid_fraction > 0 and len(clips) > 1 else 0
    valid_clips = {clips[i] for i in order[:n_valid]}
    valid_ids = [i for i in train_ids if str(clip_of(i)) in valid_clips]
    fit_ids = [i for i in train_ids if str(clip_of(i)) not in valid_clips]
    built = {"train": build(fit_ids, "train"), "valid": build(valid_ids, "valid"), "test": build(test_ids, "test")}
    visual_dim = features.visual_dim or 0
    for samples in built.values():  # clips without faces were built before the visual size was known
        for sample in samples:
            if sample.visual.shape[-1] != visual_dim:
                sample.visual = torch.zeros(*sample.visual.shape[:-1], visual_dim)
    dims = FeatureDims(features.text_dim, visual_dim, features.audio_dim, personality.shape[1])
    splits = {k: RamerDataset(v, label_names, dims, name=f"memor-{emo_type}:{k}", source=str(root))
              for k, v in built.items()}
    log.info("read MEmoR %s from %s: %s", emo_type, root, ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    return DatasetSplits(**splits)
