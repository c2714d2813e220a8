"""Identity linking on edited footage: pairwise precision and recall of tracks -> characters.

Builds the labelled identity set of tests/extractors/edited_media.py (shot/reverse-shot, montages of
five different people, one person across shots at different scales, the crowd clip cut to a closer
shot) from ../shared/media with PyAV, runs the whole visual pass on each edit and compares, for every
pair of tracks in an edit, "same character" with "same person" (known from how the edit was cut).
Also times the visual pass on the 1080p crowd clip (descriptor cost: item 8 of issue 9).

    .venv/bin/python benchmarks/identity_linking.py [--out benchmarks/results/identity_linking.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model, write_table  # noqa: E402  (benchmarks/machine.py, beside this script)

from extractors.visual_features import VisualConfig, VisualExtractor  # noqa: E402
from tests.extractors import edited_media as em  # noqa: E402

RELIABLE_SIZE = 64.0   # faces of at least this many pixels are expected to be linked (ChipGate's default)


def evaluate(extractor: VisualExtractor, edit: em.Edit, path: Path, sizes, crowd) -> dict:
    result = extractor(path)
    known_different = crowd.known_different if edit.kind == "crowd" else None
    labels = em.label_tracks(edit, result.tracks, sizes, crowd.person_at if crowd else None)
    character = result.character_of_track()
    big = {t.id for t in result.tracks if em.face_size(t) >= RELIABLE_SIZE}
    counts = {"same": 0, "linked": 0, "same_big": 0, "linked_big": 0, "different": 0, "merged": 0}
    ids = sorted(labels)
    for i in range(len(ids)):
        for j in range(i + 1, len(ids)):
            a, b = labels[ids[i]], labels[ids[j]]
            if a is None or b is None or (a != b and known_different is not None and not known_different(a, b)):
                continue
            linked = character.get(ids[i]) == character.get(ids[j])
            if a == b:
                counts["same"] += 1
                counts["linked"] += linked
                if ids[i] in big and ids[j] in big:
                    counts["same_big"] += 1
                    counts["linked_big"] += linked
            else:
                counts["different"] += 1
                counts["merged"] += linked
    people = {p for p in labels.values() if p is not None}
    return {"edit": edit, "tracks": len(result.tracks), "characters": len(result.characters),
            "people": len(people), "unlabelled": sum(p is None for p in labels.values()), **counts}


def count_descriptors(extractor: VisualExtractor) -> list[int]:
    """Counts the chips the embedder embeds (a one-element list, reset by the caller)."""
    count = [0]
    embed = extractor.embedder.embed

    def counted(chips):
        count[0] += len(chips)
        return embed(chips)

    extractor.embedder.embed = counted
    return count


def ratio(a: int, b: int) -> str:
    return f"{a}/{b} ({a / b:.0%})" if b else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path(os.environ.get("RAMER_SHARED_DIR", REPO.parent / "shared")) / "media")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads during the passes")
    parser.add_argument("--speed-runs", type=int, default=1, help="timed passes over the 1080p crowd clip")
    parser.add_argument("--speed-only", action="store_true", help="only time the crowd clip (no identity set)")
    args = parser.parse_args()

    extractor = VisualExtractor(VisualConfig(torch_threads=args.threads))
    descriptors = count_descriptors(extractor)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    speed = []
    for _ in range(args.speed_runs):
        descriptors[0] = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        result = extractor(args.media / em.CROWD)
        speed.append((time.perf_counter() - started, time.process_time() - cpu_started,
                      result.seconds.get("embedding", 0.0), descriptors[0], result.info.duration,
                      len(result.tracks), len(result.characters)))
    wall, cpu, embedding, n_descriptors, duration, n_tracks, n_characters = min(speed)
    speed_line = (f"- Crowd clip {em.CROWD} (1080p, {duration:.1f} s), whole visual pass: wall {wall:.1f} s "
                  f"({wall / duration:.2f} x duration), CPU {cpu:.1f} s ({cpu / duration:.2f} x duration; with one torch "
                  f"thread about the wall time of an idle machine); identity chips and descriptors {embedding:.1f} s wall, "
                  f"{n_descriptors} descriptors; {n_tracks} tracks, {n_characters} characters.")
    if args.speed_only:
        print(speed_line)
        return 0
    edits = em.identity_set()
    sizes = em.source_sizes(args.media, edits)
    crowd = em.crowd_reference(args.media, extractor.detector)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for edit in edits:
            path = em.write_edit(edit, args.media, Path(folder) / f"{edit.name}.mp4")
            rows.append(evaluate(extractor, edit, path, sizes, crowd))
            print(rows[-1]["edit"].name, {k: v for k, v in rows[-1].items() if k != "edit"}, file=sys.stderr, flush=True)

    def total(kind: str | None, key: str) -> int:
        return sum(r[key] for r in rows if kind is None or r["edit"].kind == kind)

    non_crowd = [r for r in rows if r["edit"].kind != "crowd"]
    tp = sum(r["linked"] for r in non_crowd)
    fp = sum(r["merged"] for r in non_crowd)
    fn = sum(r["same"] - r["linked"] for r in non_crowd)
    crowd_row = next(r for r in rows if r["edit"].kind == "crowd")
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
        f"python {platform.python_version()}; {args.threads} torch thread(s); 1-minute load average at start {load:.1f}.",
        f"Embedder {extractor.embedder.name}, threshold {extractor.threshold:.2f}, "
        f"{extractor.config.chips_per_track} chips per track at most.",
        "",
        "Pairs of tracks within each edit: same person (truth from the cut) vs same character (the pass). "
        f"'big': both tracks' median face >= {RELIABLE_SIZE:g} px. Crowd: pairs known only where the uncut "
        "clip shows the two people together (different) or tracks them as one (same).",
        "",
        "| edit | kind | tracks | people | characters | same person linked | same, big faces | different people merged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['edit'].name} | {r['edit'].kind} | {r['tracks']} | {r['people']} | {r['characters']} | "
                     f"{ratio(r['linked'], r['same'])} | {ratio(r['linked_big'], r['same_big'])} | "
                     f"{ratio(r['merged'], r['different'])} |")
    lines += [
        "",
        f"- Pairwise precision (edits without the crowd): {ratio(tp, tp + fp)}; recall {ratio(tp, tp + fn)}.",
        f"- False merges on montages of different people: {total('montage', 'merged')} of {total('montage', 'different')} pairs.",
        f"- Same person across shots linked (scales edits): {ratio(total('scales', 'linked'), total('scales', 'same'))}; "
        f"with both faces >= {RELIABLE_SIZE:g} px: {ratio(total('scales', 'linked_big'), total('scales', 'same_big'))}.",
        f"- Shot/reverse-shot: {next(r['characters'] for r in rows if r['edit'].kind == 'shot-reverse-shot')} characters "
        "(2 people).",
        f"- Crowd cut: same linked {ratio(crowd_row['linked'], crowd_row['same'])}, different merged "
        f"{ratio(crowd_row['merged'], crowd_row['different'])}.",
        speed_line,
    ]
    write_table(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
