"""One colour per emotion label and per character, shared by the overlay, the plots and the report.

Hex strings, so matplotlib, PIL, CSS and OpenCV (through :func:`rgb`) read the same value. Labels a
checkpoint adds beyond these get a stable colour from :data:`FALLBACK` (by their position).
"""

from __future__ import annotations

EMOTION_COLORS: dict[str, str] = {
    "anger": "#d62728",
    "disgust": "#2ca02c",
    "fear": "#9467bd",
    "joy": "#f2b701",
    "neutral": "#9e9e9e",
    "sadness": "#1f77b4",
    "surprise": "#ff7f0e",
    # fer's expression labels (faces.expression_labels), same hues
    "angry": "#d62728",
    "happy": "#f2b701",
    "sad": "#1f77b4",
}

# Characters in the order of the timeline's ``characters`` list; bright so boxes stand out on video.
CHARACTER_COLORS: tuple[str, ...] = (
    "#00d5ff", "#ff3fd2", "#8cff3f", "#4f7bff", "#00ffa6", "#ff9d3f", "#b48cff", "#ffe93f",
)

FALLBACK: tuple[str, ...] = ("#17becf", "#bcbd22", "#e377c2", "#8c564b", "#7f7f7f", "#aec7e8")

OFFSCREEN_COLOR = "#bdbdbd"  # speech of nobody on screen


def emotion_color(label: str, index: int = 0) -> str:
    return EMOTION_COLORS.get(label, FALLBACK[index % len(FALLBACK)])


def character_color(index: int) -> str:
    return CHARACTER_COLORS[index % len(CHARACTER_COLORS)]


def rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` -> (r, g, b) in 0..255."""
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)
