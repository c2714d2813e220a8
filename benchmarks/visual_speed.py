"""Speed of the visual stages (decode, shots, detection, tracking, embedding, expression, mesh) at 720p and 1080p.

Runs the whole visual pass (extractors.visual_features.VisualExtractor, default settings, FaceMesh
included) on real clips from ../shared/media several times and prints a markdown table of medians: the
seconds spent in each stage (VisualResult.seconds) and the whole pass as a fraction of the video's
duration (real-time factor; targets on a 2-core CPU: <= 0.3 at 720p, <= 0.5 at 1080p). CPU with 1 and 2
torch threads side by side, and CUDA when present; the pass with a full face search on every analysed frame
(``full_detection_every=1``) beside the default. A second table puts the face detector alone beside
facenet-pytorch's own ``detect_face`` (the reference MTCNN, same nets and thresholds) on the same frames:
seconds per frame and how many of the reference's faces the project's cascade finds.

    .venv/bin/python benchmarks/visual_speed.py [--runs 3] [--out benchmarks/results/visual_speed.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine import cpu_model, write_table  # noqa: E402  (benchmarks/machine.py, beside this script)

from extractors.faces import FaceDetector, import_facenet  # noqa: E402
from extractors.io import torch_threads  # noqa: E402
from extractors.media import DEFAULT_ANALYSIS_FPS, iter_frames  # noqa: E402
from extractors.mtcnn import nms_indices, per_image  # noqa: E402
from extractors.tracking import box_iou  # noqa: E402
from extractors.visual_features import STAGES, VisualConfig, VisualExtractor  # noqa: E402

CLIPS = (("720p", "visualvoice_interview.mp4", 0.3), ("1080p", "facenet_pytorch_video.mp4", 0.5))  # label, file, target



def full_rate_decode_fps(path: Path) -> float:
    started = time.perf_counter()
    count = sum(1 for _ in iter_frames(path, fps=None))
    return count / (time.perf_counter() - started)


def measure(extractor: VisualExtractor, path: Path, runs: int) -> dict:
    extractor(path)  # warm-up: first-call allocations, caches
    rows = []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = extractor(path)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        faces = sum(len(t.detections) for t in result.tracks)
        rows.append({"wall": wall, "cpu": cpu, "frames": result.frames_analysed, "faces": faces,
                     "tracks": len(result.tracks), "characters": len(result.characters),
                     "duration": result.info.duration, **result.seconds})
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def _reference_batched_nms(boxes, scores, idxs, threshold):
    """torchvision.ops.batched_nms for facenet-pytorch's detect_face when torchvision cannot be imported."""
    table = torch.cat([boxes, scores[:, None]], 1).detach().cpu().numpy()
    keep = per_image(nms_indices, table, idxs.cpu().numpy(), threshold)
    return torch.as_tensor(keep[np.argsort(-table[keep, 4], kind="stable")], dtype=torch.long)


@torch.inference_mode()
def compare_detectors(path: Path, runs: int) -> dict:
    """facenet-pytorch's detect_face and the project's cascade on the same downscaled analysis frames."""
    detector = FaceDetector()
    reference = import_facenet()
    reference.batched_nms = _reference_batched_nms
    images = [f.image for f in iter_frames(path, DEFAULT_ANALYSIS_FPS)]
    small = [detector._downscaled([image])[0] for image in images]
    cfg = detector.config
    batch = cfg.batch_size

    def run_reference():
        found = []
        for start in range(0, len(small), batch):
            boxes, _ = reference.detect_face(np.concatenate(small[start : start + batch]), cfg.min_face_size,
                                             *detector.nets, list(cfg.thresholds), cfg.factor, detector.device)
            found += [np.asarray(b, dtype=np.float64).reshape(-1, 5) for b in boxes]
        return found

    def run_cascade():
        found = []
        for start in range(0, len(small), batch):
            found += [out.boxes.astype(np.float64) for out in detector.cascade.detect(np.concatenate(small[start : start + batch]))]
        return found

    timings, outputs = {}, {}
    for name, fn in (("reference", run_reference), ("cascade", run_cascade)):
        with torch_threads(1):
            fn()
            seconds = []
            for _ in range(runs):
                started = time.perf_counter()
                outputs[name] = fn()
                seconds.append(time.perf_counter() - started)
        timings[name] = statistics.median(seconds)
    kept = [[b[b[:, 4] >= cfg.min_score] for b in outputs[name]] for name in ("reference", "cascade")]
    matched = sum(int((box_iou(r[:, :4], c[:, :4]).max(axis=1) > 0.7).sum()) for r, c in zip(*kept, strict=True)
                  if len(r) and len(c))
    return {"frames": len(images), "reference s": timings["reference"], "cascade s": timings["cascade"],
            "reference faces": sum(map(len, kept[0])), "cascade faces": sum(map(len, kept[1])), "matched": matched}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path(os.environ.get("RAMER_SHARED_DIR", REPO.parent / "shared")) / "media")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args()

    every = VisualConfig().full_detection_every
    settings = [("cpu", 1, every), ("cpu", 2, every), ("cpu", 2, 1)] + ([("cuda", 2, every)] if torch.cuda.is_available() else [])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
        f"python {platform.python_version()}; 1-minute load average at start {load:.1f}.",
        f"Defaults: analysis {DEFAULT_ANALYSIS_FPS:g} frames/s, detection on frames downscaled to "
        f"{VisualConfig().detector.max_side} px (longer side), min face {VisualConfig().detector.min_face_size} px, "
        f"{VisualConfig().chips_per_track} identity chips per track. Medians of {args.runs} runs after a warm-up.",
        "Stage columns: seconds spent in that stage over the whole clip (decode includes skipping the frames "
        "between samples; mesh is FaceMesh on every face). x duration: whole pass (wall clock) / video length, "
        "the real-time factor. CPU s: processor time of the pass (all threads); with 1 thread it is about the "
        "wall time an idle machine would need, whatever else shares the cores (decoding threads add a little).",
        "",
        "| clip | device | threads | full search every | full-rate decode fps | frames | faces | "
        + " | ".join(f"{stage} s" for stage in STAGES)
        + " | total s | x duration | target | CPU s | CPU x duration |",
        "|" + "---|" * (7 + len(STAGES) + 5),
    ]
    for label, name, target in CLIPS:
        path = args.media / name
        decode_fps = full_rate_decode_fps(path)
        for device, threads, search_every in settings:
            config = VisualConfig(torch_threads=threads, device=device, full_detection_every=search_every)
            extractor = VisualExtractor(config)
            m = measure(extractor, path, args.runs)
            ratio = m["wall"] / m["duration"]
            lines.append(
                f"| {label} {name} | {device} | {threads} | {search_every} | {decode_fps:.0f} | {m['frames']:.0f} | {m['faces']:.0f} | "
                + " | ".join(f"{m[stage]:.2f}" for stage in STAGES)
                + f" | {m['wall']:.2f} | {ratio:.2f} | <= {target} {'met' if ratio <= target else 'missed'}"
                + f" | {m['cpu']:.2f} | {m['cpu'] / m['duration']:.2f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "Face detector alone, 1 thread, on the analysis frames downscaled as in the pass: facenet-pytorch's "
              "detect_face (reference) and extractors.mtcnn (project), same nets and thresholds; faces scoring "
              f">= {VisualConfig().detector.min_score}; matched: project faces overlapping a reference face by IoU > 0.7.",
              "", "| clip | frames | reference ms/frame | project ms/frame | speed-up | reference faces | project faces | matched |",
              "|---|---|---|---|---|---|---|---|"]
    for label, name, _ in CLIPS:
        c = compare_detectors(args.media / name, args.runs)
        lines.append(f"| {label} {name} | {c['frames']} | {1000 * c['reference s'] / c['frames']:.1f} | "
                     f"{1000 * c['cascade s'] / c['frames']:.1f} | {c['reference s'] / c['cascade s']:.2f}x | "
                     f"{c['reference faces']} | {c['cascade faces']} | {c['matched']} |")
        print(lines[-1], file=sys.stderr, flush=True)
    end_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"1-minute load average at the end {end_load:.1f} (above about 2, other jobs shared the 2 cores "
              "and the wall-clock columns are inflated; CPU s is the steadier figure)."]
    write_table(args.out, "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
