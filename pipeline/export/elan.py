"""ELAN ``.eaf`` (pympi-ling): speech tiers with the transcript, dependent emotion and confidence tiers.

The tiers are those of pipeline.export.tiers. ``Name`` and ``Name role`` are time-aligned top-level
tiers; ``Name emotion`` and ``Name confidence`` are Symbolic_Association children of ``Name role``
(one annotation per moment, sharing its parent's times), the constraint ELAN offers for a 1-1 label of
a parent annotation. The video is linked (absolute ``MEDIA_URL`` plus ``RELATIVE_MEDIA_URL`` from the
.eaf's folder), so ELAN opens it beside the annotations.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from pipeline.export.common import media_path, relative_url, writing
from pipeline.export.tiers import speaker_tiers

SPEECH, MOMENT, EMOTION, CONFIDENCE = "speech", "moment", "emotion", "confidence"
MIME_TYPES = {"wav": "audio/x-wav", "mpg": "video/mpeg", "mpeg": "video/mpeg", "mp4": "video/mp4"}


def _mime_type(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    return MIME_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def build_eaf(timeline: dict, path: Path, timeline_path: Path | None = None):
    from pympi import Elan

    eaf = Elan.Eaf(author="ramer-timelines")
    eaf.remove_tier("default")  # pympi's placeholders
    eaf.remove_linguistic_type("default-lt")
    eaf.add_linguistic_type(SPEECH)
    eaf.add_linguistic_type(MOMENT)
    for kind in (EMOTION, CONFIDENCE):
        eaf.add_linguistic_type(kind, constraints="Symbolic_Association", timealignable=False)
    media = media_path(timeline, timeline_path)
    # ELAN's own files write the path as is after file:// (no percent-encoding), relative ones after ./
    eaf.add_linked_file(f"file://{media.as_posix()}", relpath=relative_url(media, path.parent),
                        mimetype=_mime_type(media))
    for tiers in speaker_tiers(timeline):
        for lane, intervals in enumerate(tiers.speech):
            tier = tiers.speech_tier(lane)
            eaf.add_tier(tier, ling=SPEECH, part=tiers.label)
            for interval in intervals:
                eaf.add_annotation(tier, interval.start_ms, interval.end_ms, interval.value)
        for lane, moments in enumerate(tiers.moments):
            parent = tiers.moment_tier("role", lane)
            eaf.add_tier(parent, ling=MOMENT, part=tiers.label)
            for kind in (EMOTION, CONFIDENCE):
                eaf.add_tier(tiers.moment_tier(kind, lane), ling=kind, parent=parent, part=tiers.label)
            for moment in moments:
                eaf.add_annotation(parent, moment.start_ms, moment.end_ms, moment.role)
                middle = (moment.start_ms + moment.end_ms) / 2  # strictly inside this parent only
                eaf.add_ref_annotation(tiers.moment_tier(EMOTION, lane), parent, middle, moment.emotion)
                eaf.add_ref_annotation(tiers.moment_tier(CONFIDENCE, lane), parent, middle, moment.confidence)
    eaf.header.update({"MEDIA_FILE": "", "TIME_UNITS": "milliseconds"})
    # ELAN numbers the annotations a user adds from this property; pympi leaves it at 0.
    eaf.properties = [(k, v) for k, v in eaf.properties if k != "lastUsedAnnotation"]
    eaf.properties.append(("lastUsedAnnotation", eaf.maxaid))
    return eaf


def write_eaf(timeline: dict, path: Path, *, timeline_path: Path | None = None) -> Path:
    from xml.etree import ElementTree

    from pympi import Elan

    eaf = build_eaf(timeline, path, timeline_path)
    document = Elan.to_adocument(eaf, pretty=True)
    # Not Eaf.to_file: it renames an existing target to .bak instead of replacing it atomically.
    return writing(path, lambda temporary: ElementTree.ElementTree(document).write(
        str(temporary), xml_declaration=True, encoding="UTF-8"))
