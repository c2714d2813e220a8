"""Corpus outputs of a batch, per show: identities.json, characters.csv and the season's emotion-mix plot.

They are rebuilt from the episode timelines at the end of every batch (cheap: no model runs), so they
always describe every finished episode, including those finished by earlier runs. A timeline is read once
and reduced to an :class:`EpisodeSummary`; a season of full timelines never sits in memory at once.

- ``identities.json``: show-level identity -> its (episode, character) members and name (see
  :mod:`pipeline.batch.identities`), and the characters that stay episode-local.
- ``characters.csv``: one row per character per episode: its show identity (or ``episode/character`` when
  episode-local), screen and speaking time, the time it was scored over, and its emotion mix: the mean
  probability of each label over its timeline entries, weighted by each entry's duration.
- ``emotion_mix.png``: one panel per show identity (every character when none spans two episodes), each
  label's mix over the episodes in season order.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from extractors.io import write_atomically
from pipeline.batch.identities import CharacterRef, ShowIdentities, match_identities
from pipeline.batch.inputs import Episode, episode_order
from pipeline.batch.state import write_json

log = logging.getLogger(__name__)

IDENTITIES_NAME = "identities.json"
CHARACTERS_NAME = "characters.csv"
PLOT_NAME = "emotion_mix.png"
MAX_PANELS = 24     # a plot with hundreds of panels is unreadable: the characters with most screen time


@dataclass
class CharacterSummary:
    ref: CharacterRef
    scored_time: float
    mix: dict[str, float] | None       # label -> time-weighted mean probability; None: never scored


@dataclass
class EpisodeSummary:
    episode: Episode
    duration: float
    labels: list[str]
    embedder: str | None
    characters: list[CharacterSummary] = field(default_factory=list)


def summarize(episode: Episode, document: dict) -> EpisodeSummary:
    """What the corpus outputs need of one timeline."""
    from extractors.identity import ChipGate

    labels = list(document["model"]["labels"])
    faces = document.get("faces") or {}
    min_face = ChipGate().min_face_pixels
    largest: dict[str, float] = {}
    for track in faces.get("tracks", []):
        sizes = [math.sqrt(max(d["box"][2] - d["box"][0], 0) * max(d["box"][3] - d["box"][1], 0))
                 for d in track["detections"]]
        if track.get("character") is not None and sizes:
            largest[track["character"]] = max(largest.get(track["character"], 0.0), max(sizes))
    weights: dict[str, float] = {}
    sums: dict[str, np.ndarray] = {}
    for entry in document["timeline"]:
        w = max(float(entry["end"]) - float(entry["start"]), 0.0)
        probs = np.array([float(entry["probs"].get(label, 0.0)) for label in labels])
        weights[entry["character"]] = weights.get(entry["character"], 0.0) + w
        sums[entry["character"]] = sums.get(entry["character"], np.zeros(len(labels))) + w * probs
    summary = EpisodeSummary(episode, float(document["video"]["duration"]), labels, faces.get("embedder"))
    for character in document["characters"]:
        cid = character["id"]
        embedding = character.get("embedding")
        ref = CharacterRef(episode.name, cid, character.get("name"),
                           np.asarray(embedding, dtype=np.float64) if embedding else None,
                           largest.get(cid, 0.0) >= min_face, float(character["screen_time"]),
                           float(character["speaking_time"]))
        total = weights.get(cid, 0.0)
        mix = None
        if total > 0:
            mix = {label: round(float(v), 4) for label, v in zip(labels, sums[cid] / total, strict=True)}
        summary.characters.append(CharacterSummary(ref, round(total, 3), mix))
    return summary


def write_show(out: Path, show: str, summaries: list[EpisodeSummary]) -> ShowIdentities:
    """Writes the show's identities.json, characters.csv and emotion_mix.png under ``out/<show>/``."""
    summaries = sorted(summaries, key=lambda s: episode_order(s.episode))
    embedders = {s.embedder for s in summaries}
    if len(embedders) > 1:   # embeddings of different models are not comparable: match the majority's only
        log.warning("%s: episodes made with different face embedders (%s); matching only the first's",
                    show, ", ".join(map(str, embedders)))
    embedder = summaries[0].embedder if summaries else None
    refs = [c.ref for s in summaries for c in s.characters if s.embedder == embedder]
    identities = match_identities(show, refs, embedder)
    for s in summaries:
        if s.embedder != embedder:
            identities.local.extend((c.ref, "other face embedder") for c in s.characters)
    folder = out / show
    write_json(folder / IDENTITIES_NAME, identities.to_dict())
    write_characters_csv(folder / CHARACTERS_NAME, summaries, identities)
    try:
        plot_emotion_mix(folder / PLOT_NAME, show, summaries, identities)
    except Exception as error:  # noqa: BLE001  (a plot must not fail a batch whose timelines are all written)
        log.warning("%s: no emotion-mix plot (%s)", show, error)
    log.info("%s: %d episodes, %d show-level identities, %d episode-local characters", show, len(summaries),
             len(identities.identities), len(identities.local))
    return identities


def identity_label(identities: ShowIdentities, episode: str, character: str) -> str:
    return identities.identity_of(episode, character) or f"{episode}/{character}"


def write_characters_csv(path: Path, summaries: list[EpisodeSummary], identities: ShowIdentities) -> None:
    labels = _labels(summaries)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["show", "identity", "name", "episode", "season", "episode_number", "character",
                     "screen_time", "speaking_time", "scored_time", *labels])
    for s in summaries:
        e = s.episode
        for c in s.characters:
            mix = c.mix or {}
            writer.writerow([e.show, identity_label(identities, e.name, c.ref.character), c.ref.name or "", e.name,
                             e.season or "", e.episode or "", c.ref.character, c.ref.screen_time,
                             c.ref.speaking_time, c.scored_time, *[mix.get(label, "") for label in labels]])
    text = buffer.getvalue()
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8", newline=""))


def _labels(summaries: list[EpisodeSummary]) -> list[str]:
    return list(dict.fromkeys(label for s in summaries for label in s.labels))


def plot_emotion_mix(path: Path, show: str, summaries: list[EpisodeSummary], identities: ShowIdentities) -> None:
    """One panel per identity: each label's mix (y) over the season's episodes (x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = _labels(summaries)
    names = [s.episode.name for s in summaries]
    series: dict[str, dict[int, dict[str, float]]] = {}   # identity label -> episode index -> mix
    titles: dict[str, str] = {}
    screen: dict[str, float] = {}
    show_level = {i.id for i in identities.identities}
    for index, s in enumerate(summaries):
        for c in s.characters:
            key = identity_label(identities, s.episode.name, c.ref.character)
            if show_level and key not in show_level:
                continue
            if c.mix is not None:
                series.setdefault(key, {})[index] = c.mix
            titles.setdefault(key, key if not c.ref.name else f"{c.ref.name} ({key})")
            screen[key] = screen.get(key, 0.0) + c.ref.screen_time
    keys = sorted(series, key=lambda k: -screen[k])[:MAX_PANELS]
    columns = min(3, max(1, len(keys)))
    rows = max(1, math.ceil(len(keys) / columns))
    width = max(7.0, 4.2 * columns)
    figure, axes = plt.subplots(rows, columns, figsize=(width, 2.8 * rows + 1.2), squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    for panel, key in zip(axes.flat, keys, strict=False):
        points = series[key]
        xs = sorted(points)
        for k, label in enumerate(labels):
            panel.plot(xs, [points[x].get(label, np.nan) for x in xs], marker="o", markersize=3,
                       color=colours(k % 10), label=label)
        panel.set_title(titles[key], fontsize=9)
        panel.set_xticks(range(len(names)))
        panel.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
        panel.set_xlim(-0.5, len(names) - 0.5)
        panel.set_ylim(0, 1)
    for panel in list(axes.flat)[len(keys):]:
        panel.axis("off")
    if not keys:
        axes.flat[0].text(0.5, 0.5, "no scored characters", ha="center", va="center")
    handles, legend_labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, legend_labels, loc="lower center", fontsize=7, ncol=min(7, len(labels)),
                      frameon=False)
    figure.suptitle(f"{show}: emotion mix per episode (time-weighted mean probability)", fontsize=10)
    bottom = 0.6 / (2.8 * rows + 1.2)   # room for the legend, in figure fractions
    figure.tight_layout(rect=(0, bottom, 1, 1 - 0.5 / (2.8 * rows + 1.2)))
    write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110))
    plt.close(figure)
