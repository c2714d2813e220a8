"""Static pictures of a timeline: one lane per character over time, and each character's emotion mix.

Lane: a strip saying when the character speaks (their colour, each transcript turn outlined, its words
where they fit) or listens (grey), above a heat-map band with one row per emotion label whose colour
deepens with the probability (white = 0, grey background = no entry: off screen). The band is drawn as
one image with a column per pixel, each the time-weighted mean of the entries it covers, so a 22-minute
episode stays one readable figure of fixed size per minute instead of thousands of patches.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot state, no GUI backend) and saved with
:func:`extractors.io.write_atomically`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

from extractors.io import write_atomically
from pipeline.render.colors import OFFSCREEN_COLOR, character_color, emotion_color, rgb

log = logging.getLogger(__name__)

DPI = 110
LISTEN_COLOR = "#c9c9c9"
NO_ENTRY_COLOR = "#ececec"
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)

# inches
LANE_H, LANE_GAP, TURNS_H = 1.15, 0.16, 0.32
LEFT, RIGHT, TOP, BOTTOM = 2.0, 0.85, 0.95, 0.5


def format_time(seconds: float, _position: object = None) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    total = int(round(max(seconds, 0.0)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def tick_step(duration: float, width_in: float) -> float:
    """The smallest round step giving at most one tick per 0.8 inch."""
    wanted = duration / max(width_in / 0.8, 1.0)
    return next((step for step in TICK_STEPS if step >= wanted), TICK_STEPS[-1])


def figure_width(duration: float) -> float:
    """Inches: 10 for a short clip, growing about an inch per minute, at most 30 (a 22-minute episode ~26)."""
    return float(min(30.0, max(10.0, 4.0 + duration / 60.0)))


@dataclass
class TimelinePlot:
    figure: Figure
    lanes: dict[str, Axes]       # character id -> lane, in the timeline's character order
    turns: Axes                  # every transcript turn, coloured by speaker


def _duration(timeline: dict) -> float:
    ends = [timeline["video"]["duration"]] + [e["end"] for e in timeline["timeline"]] + \
           [s["end"] for s in timeline["segments"]]
    return max(max(ends), 1e-3)


def _character_labels(timeline: dict) -> dict[str, str]:
    return {c["id"]: c["name"] or c["id"] for c in timeline["characters"]}


def emotion_band(entries: list[dict], labels: list[str], duration: float, bins: int) -> np.ndarray:
    """RGBA [labels, bins]: each bin blends white to the label's colour by the time-weighted mean
    probability over the entries covering it; alpha is the share of the bin covered (0 = no entry)."""
    dt = duration / bins
    sums = np.zeros((len(labels), bins))
    cover = np.zeros(bins)
    for entry in entries:
        a, b = max(entry["start"], 0.0) / dt, min(entry["end"], duration) / dt
        if b <= a:
            continue
        index = np.arange(int(np.floor(a)), min(int(np.ceil(b)), bins))
        weight = np.minimum(b, index + 1) - np.maximum(a, index)
        cover[index] += weight
        probs = np.array([entry["probs"].get(label, 0.0) for label in labels])
        sums[:, index] += probs[:, None] * weight[None, :]
    mean = sums / np.maximum(cover, 1e-9)[None, :]
    colors = np.array([rgb(emotion_color(label, i)) for i, label in enumerate(labels)], float) / 255.0
    image = np.ones((len(labels), bins, 4))
    image[..., :3] = 1.0 - mean[..., None] * (1.0 - colors[:, None, :])
    image[..., 3] = np.clip(cover, 0.0, 1.0)[None, :]
    return image


def _thumbnail(ax: Axes, path: Path | None) -> None:
    ax.set_axis_off()
    if path is None or not path.is_file():
        return
    try:
        from PIL import Image

        with Image.open(path) as image:
            ax.imshow(np.asarray(image.convert("RGB")))
    except OSError as error:
        log.warning("thumbnail %s not drawn (%s)", path, error)


def _fitting_text(text: str, width_in: float, fontsize: float) -> str | None:
    """``text`` cut to what fits ``width_in`` inches at ``fontsize`` points (None when not 4 characters)."""
    chars = int(width_in / (fontsize * 0.55 / 72))
    if chars < 4:
        return None
    return text if len(text) <= chars else text[: chars - 1].rstrip() + "…"


def timeline_figure(timeline: dict, base_dir: Path | None = None) -> TimelinePlot:
    """The lanes figure; ``base_dir`` is where the timeline JSON lies (thumbnails are relative to it)."""
    labels = list(timeline["model"]["labels"])
    characters = timeline["characters"]
    names = _character_labels(timeline)
    duration = _duration(timeline)
    width = figure_width(duration)
    height = TOP + TURNS_H + LANE_GAP + len(characters) * (LANE_H + LANE_GAP) + BOTTOM
    figure = Figure(figsize=(width, height), dpi=DPI)
    axis_w = width - LEFT - RIGHT
    step = tick_step(duration, axis_w)

    def frame(y_top_in: float, h_in: float) -> list[float]:
        return [LEFT / width, 1 - (y_top_in + h_in) / height, axis_w / width, h_in / height]

    def time_axis(ax: Axes, show: bool) -> None:
        ax.set_xlim(0, duration)
        ax.xaxis.set_major_locator(MultipleLocator(step))
        ax.xaxis.set_major_formatter(FuncFormatter(format_time))
        ax.tick_params(axis="x", labelbottom=show, labelsize=8, length=3 if show else 0)
        ax.grid(axis="x", color="#ffffff", linewidth=0.5, alpha=0.6)
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)

    video_name = Path(timeline["video"]["path"]).name
    figure.text(0.5 * LEFT / width, 1 - 0.3 / height, f"{video_name}  ·  {format_time(duration)}",
                fontsize=11, fontweight="bold", va="center")
    handles = [Patch(color=emotion_color(label, i), label=label) for i, label in enumerate(labels)]
    handles += [Patch(facecolor="#ffffff", edgecolor="#222222", label="speaking: own colour, a box per turn"),
                Patch(color=LISTEN_COLOR, label="listening"),
                Patch(facecolor=NO_ENTRY_COLOR, edgecolor="#bbbbbb", label="no entry")]
    figure.legend(handles=handles, loc="center", bbox_to_anchor=(0.5, 1 - 0.68 / height), ncol=len(handles),
                  frameon=False, fontsize=8, handlelength=1.2, columnspacing=1.0)

    turns = figure.add_axes(frame(TOP, TURNS_H))
    time_axis(turns, False)
    turns.set_ylim(0, 1)
    turns.set_yticks([])
    turns.set_facecolor("#f7f7f7")
    colors = {c["id"]: character_color(i) for i, c in enumerate(characters)}
    for segment in timeline["segments"]:
        color = colors.get(segment["character"], OFFSCREEN_COLOR)
        turns.broken_barh([(segment["start"], segment["end"] - segment["start"])], (0.1, 0.8),
                          facecolors=color, edgecolors="#333333", linewidths=0.4)
        who = names.get(segment["character"], segment["voice"] or "?")
        text = _fitting_text(who, (segment["end"] - segment["start"]) / duration * axis_w, 7)
        if text:
            turns.text((segment["start"] + segment["end"]) / 2, 0.5, text, ha="center", va="center", fontsize=7)
    figure.text((LEFT - 0.1) / width, 1 - (TOP + TURNS_H / 2) / height, "turns", ha="right", va="center",
                fontsize=9, color="#444444")

    lanes: dict[str, Axes] = {}
    by_character: dict[str, list[dict]] = {}
    for entry in timeline["timeline"]:
        by_character.setdefault(entry["character"], []).append(entry)
    bins = int(min(4000, max(200, axis_w * DPI)))
    n = len(labels)
    for index, character in enumerate(characters):
        top = TOP + TURNS_H + LANE_GAP + index * (LANE_H + LANE_GAP)
        ax = figure.add_axes(frame(top, LANE_H))
        lanes[character["id"]] = ax
        time_axis(ax, index == len(characters) - 1)
        ax.set_facecolor(NO_ENTRY_COLOR)
        entries = sorted(by_character.get(character["id"], []), key=lambda e: e["start"])
        ax.imshow(emotion_band(entries, labels, duration, bins), aspect="auto", interpolation="nearest",
                  extent=(0, duration, 0, n), origin="upper")
        strip = (n + 0.2, 1.1)
        color = colors[character["id"]]
        for role, fill in (("speaker", color), ("listener", LISTEN_COLOR)):
            spans = [(e["start"], e["end"] - e["start"]) for e in entries if e["role"] == role]
            ax.broken_barh(spans, strip, facecolors=fill, linewidths=0)
        own = [s for s in timeline["segments"] if s["character"] == character["id"]]
        ax.broken_barh([(s["start"], s["end"] - s["start"]) for s in own], strip, facecolors="none",
                       edgecolors="#222222", linewidths=0.6)
        for segment in own:
            text = _fitting_text(segment["text"].strip(), (segment["end"] - segment["start"]) / duration * axis_w,
                                 6.5)
            if text:
                ax.text(segment["start"] + 0.01 * duration / axis_w, strip[0] + strip[1] / 2, text,
                        va="center", ha="left", fontsize=6.5, clip_on=True)
        ax.set_ylim(0, n + 1.4)
        ax.set_xlim(0, duration)
        ax.yaxis.tick_right()
        ax.set_yticks([n - i - 0.5 for i in range(n)] + [strip[0] + strip[1] / 2])
        ax.set_yticklabels(labels + ["speech"], fontsize=7)
        ax.tick_params(axis="y", length=0, pad=2)
        y_mid = 1 - (top + LANE_H / 2) / height
        thumb_h = LANE_H * 0.8
        thumb = figure.add_axes([0.08 / width, y_mid - thumb_h / 2 / height, thumb_h / width, thumb_h / height])
        _thumbnail(thumb, _thumbnail_path(character, base_dir))
        name = names[character["id"]]
        figure.text((LEFT - 0.1) / width, y_mid + 0.12 / height, name, ha="right", va="bottom", fontsize=10,
                    fontweight="bold", color="#111111")
        figure.text((LEFT - 0.1) / width, y_mid, f"speaks {character['speaking_time']:.0f} s\n"
                    f"on screen {character['screen_time']:.0f} s", ha="right", va="top", fontsize=7,
                    color="#444444")
        ax.add_patch(_swatch(ax, color, 0.07 / axis_w))
    return TimelinePlot(figure, lanes, turns)


def _swatch(ax: Axes, color: str, width: float):
    """A bar of the character's colour down the lane's left edge (``width`` in axes fractions), tying the
    lane to the character's box colour in the overlay."""
    from matplotlib.patches import Rectangle

    return Rectangle((-width, 0), width, 1, transform=ax.transAxes, color=color, clip_on=False)


def _thumbnail_path(character: dict, base_dir: Path | None) -> Path | None:
    file = (character.get("thumbnail") or {}).get("file")
    return base_dir / file if file and base_dir is not None else None


def emotion_mix(timeline: dict) -> dict[str, dict[str, tuple[float, float]]]:
    """character id -> label -> (time-weighted mean probability, share of the time the label is predicted)."""
    labels = list(timeline["model"]["labels"])
    totals: dict[str, float] = {}
    mix: dict[str, dict[str, list[float]]] = {}
    for entry in timeline["timeline"]:
        span = max(entry["end"] - entry["start"], 0.0)
        totals[entry["character"]] = totals.get(entry["character"], 0.0) + span
        acc = mix.setdefault(entry["character"], {label: [0.0, 0.0] for label in labels})
        for label in labels:
            acc[label][0] += entry["probs"].get(label, 0.0) * span
            acc[label][1] += span if label in entry["labels"] else 0.0
    out = {}
    for character in timeline["characters"]:
        total = totals.get(character["id"], 0.0)
        acc = mix.get(character["id"], {label: [0.0, 0.0] for label in labels})
        out[character["id"]] = {label: (acc[label][0] / total if total else 0.0,
                                        acc[label][1] / total if total else 0.0) for label in labels}
    return out


def emotion_mix_figure(timeline: dict) -> tuple[Figure, list[Axes]]:
    """Two panels of grouped horizontal bars, one group per character: mean probability, share labelled."""
    labels = list(timeline["model"]["labels"])
    names = _character_labels(timeline)
    mix = emotion_mix(timeline)
    ids = [c["id"] for c in timeline["characters"]]
    figure = Figure(figsize=(10, 1.3 + 0.18 * len(labels) * max(len(ids), 1) + 0.25 * len(ids)), dpi=DPI)
    axes = figure.subplots(1, 2, sharey=True)
    bar = 0.8 / len(labels)
    for panel, (ax, title) in enumerate(zip(axes, ("mean probability (time-weighted)",
                                                   "share of time the label is predicted"), strict=True)):
        for i, label in enumerate(labels):
            y = [k + (i - (len(labels) - 1) / 2) * bar for k in range(len(ids))]
            ax.barh(y, [mix[c][label][panel] for c in ids], height=bar * 0.92,
                    color=emotion_color(label, i), label=label)
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.tick_params(labelsize=8)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0].set_yticks(range(len(ids)))
    axes[0].set_yticklabels([names[c] for c in ids], fontsize=10)
    axes[0].invert_yaxis()
    height = figure.get_figheight()
    figure.suptitle(f"Emotion mix per character: {Path(timeline['video']['path']).name}", fontsize=11,
                    y=1 - 0.12 / height, va="top")
    handles, names_ = axes[0].get_legend_handles_labels()
    figure.legend(handles, names_, loc="center", bbox_to_anchor=(0.5, 1 - 0.5 / height), ncol=len(labels),
                  frameon=False, fontsize=8, handlelength=1.2)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.62 / height))
    return figure, list(axes)


def save_png(figure: Figure, path: Path) -> Path:
    return write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI))


def write_plots(timeline: dict, base_dir: Path | None, out_dir: Path) -> list[Path]:
    """timeline.png and emotion_mix.png in ``out_dir``."""
    plot = timeline_figure(timeline, base_dir)
    figure, _ = emotion_mix_figure(timeline)
    return [save_png(plot.figure, out_dir / "timeline.png"), save_png(figure, out_dir / "emotion_mix.png")]
