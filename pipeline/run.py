"""``pipeline run``: one video -> per-character emotion timelines (the timeline JSON of DESIGN.md).

Stages, each cached in ``OUT/.stages`` (see :mod:`pipeline.stage_cache`):

    visual       shots, face tracks, characters, per-face features          (extractors.visual_features)
    vad          speech regions                                              (extractors.vad)
    asr          segments with word times                                    (extractors.asr)
    acoustic     frame-level acoustic features                               (extractors.acoustic_features)
    mouths       mouth opening of every face inside the speech windows      (extractors.mouth_motion)
    diarization  speaker turns; the number of characters seen is its prior   (extractors.diarization)
    speaking     which on-screen character says each segment                 (extractors.active_speaker)
    text         token embeddings of every segment                           (extractors.text_features)
    scoring      RAMer on every (moment, character), characters of a moment scored together

vad, asr and acoustic read only the audio, so they run in a second thread while the visual pass runs
(``parallel_audio``; the cores are split between the two). That thread then measures the mouths in the
speech windows the visual pass has settled (every track there closed), trailing it; when the visual pass
ends, this thread helps with the windows left. The later stages start when both are done.

Memory stays near flat in the video's length: the audio is decoded once into a file in the stage folder
that every audio stage reads a span at a time (:class:`DecodedAudio`), the Whisper states go to the stage
cache a 30 s chunk at a time and scoring reads them back a segment at a time, and RAMer scores the moments
a batch at a time as they are made, each batch capped in padded size (:class:`pipeline.scoring.PaddedBatch`).

:class:`PipelineRunner` holds the configured stages (models load on first use and stay loaded, so a
batch worker reuses them) and the RAMer checkpoint. Bad input is refused before anything is written;
a failure later removes an output folder this run created, and the timeline itself is only ever
written whole.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from extractors.contracts import SpeakerTurn, SpeechSegment, VideoInfo
from extractors.disk_arrays import RowsOnDisk
from extractors.errors import ExtractorError, MediaError
from extractors.io import map_large_allocations, return_freed_memory
from extractors.moments import MODALITIES, ModalityInputs, Moment, build_moments, split_at_pauses
from pipeline.config import PipelineConfig
from pipeline.errors import UserError
from pipeline.stage_cache import StageCache, StageRecord, content_key, file_sha256, stage_key
from pipeline.stages import StageFactory
from pipeline.timeline import SCHEMA_VERSION, write_timeline

log = logging.getLogger(__name__)

MIN_DURATION_S = 1.0
TIMELINE_NAME = "timeline.json"
STAGE_FOLDER = ".stages"

# (stage, fraction done in [0, 1]) -> None; called as stages progress, and with 1.0 when each ends
Progress = Callable[[str, float], None]


@dataclass
class RunResult:
    timeline_path: Path
    document: dict
    stages: dict[str, StageRecord]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        characters = self.document["characters"]
        segments = self.document["segments"]
        attributed = sum(1 for s in segments if s["character"] is not None)
        reused = sum(1 for r in self.stages.values() if r.cached)
        return (f"{self.timeline_path}: {len(characters)} characters, {len(segments)} speech segments "
                f"({attributed} attributed), {len(self.document['timeline'])} timeline entries in "
                f"{self.seconds:.1f} s ({reused}/{len(self.stages)} stages reused)")


def default_output_folder(video: Path) -> Path:
    return Path("out") / video.stem


def check_input(video: Path, strict: bool = False) -> VideoInfo:
    """Refuses what cannot be analysed, with one clear message, before anything is written.

    ``strict``: a video without an audio stream is refused too (otherwise it gets a visual-only timeline).
    """
    from extractors.media import probe

    if not video.exists():
        raise MediaError(f"{video} does not exist")
    if video.is_dir():
        raise MediaError(f"{video} is a directory; give a video file (use `pipeline batch` for folders)")
    info = probe(video)
    _check_decodes_to_the_end(video, info)
    if info.duration < MIN_DURATION_S:
        raise MediaError(f"{video} lasts {info.duration:.2f} s; at least {MIN_DURATION_S:.0f} s of video is needed "
                         "to read anyone's face")
    if strict and not info.has_audio:
        raise MediaError(f"{video} has no audio stream (--strict)")
    return info


def _check_decodes_to_the_end(video: Path, info: VideoInfo) -> None:
    """A truncated file (its header promises more than its data holds) is refused rather than half-analysed."""
    import av

    from extractors.media import iter_frames

    if info.duration <= 2.0:
        return
    last = None
    try:
        for frame in iter_frames(video, None, start=max(0.0, info.duration - 1.5)):
            last = frame.t
    except MediaError:
        last = None
    except av.error.FFmpegError:
        last = None
    if last is None or last < info.duration - 2.0:
        ends = "no frame near its end" if last is None else f"its last frame at {last:.2f} s"
        raise MediaError(f"{video} looks truncated: the header says {info.duration:.2f} s but there is {ends}; "
                         "re-download or re-encode it")


def check_output(folder: Path) -> bool:
    """Makes sure ``folder`` can be written; returns whether this call created it."""
    created = not folder.exists()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe_file = folder / f".write-test-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as error:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise UserError(f"cannot write to the output folder {folder}: {error.strerror or error}") from None
    return created


class _Stopped(Exception):
    """Raised in the side thread of :func:`run_beside` at its next progress report once the main work failed."""


def run_beside(main: Callable[[], Any], side: Callable[[Progress], Any], report: Progress,
               side_threads: int, then_help: Callable[[], None] | None = None) -> tuple[Any, Any]:
    """``main()`` in this thread and ``side(progress)`` in a worker thread at the same time: (both results).

    The CPU is split: torch's intra-op thread count (one setting per process) is the cores left after
    ``side_threads`` while both run, so neither oversubscribes the other (OpenMP threads that wait on
    a busy core spin). ``then_help()``, when given, runs in this thread after ``main`` and before the
    side is waited for (to share the side's remaining work). When either fails, the side stops at its
    next progress report and is waited for before the error goes on, so nothing is still writing into
    an output folder about to be removed.
    """
    from concurrent.futures import ThreadPoolExecutor

    from extractors.io import torch_threads

    stop = threading.Event()

    def progress(stage: str, fraction: float) -> None:
        if stop.is_set():
            raise _Stopped
        report(stage, fraction)

    cores = os.cpu_count() or 1
    with torch_threads(max(1, cores - side_threads)), ThreadPoolExecutor(1, thread_name_prefix="side") as pool:
        future = pool.submit(side, progress)
        try:
            result = main()
            if then_help is not None:
                then_help()
        except BaseException:
            stop.set()
            try:
                future.result()
            except BaseException:  # noqa: BLE001  (the main failure is the one to report)
                pass
            raise
        return result, future.result()


class DecodedAudio:
    """The input's 16 kHz mono audio, decoded once, when a stage first asks for it, into a file in the stage
    folder, and read from there a span at a time by every audio stage: a long video's audio (230 MB an hour)
    is never held in memory. :meth:`release` removes the file once the last stage that reads it is done."""

    def __init__(self, video: Path, folder: Path, strict: bool = False):
        self.video = video
        self.path = folder / f".audio.{os.getpid()}.f32"   # raw float32 samples
        self.strict = strict      # no audio stream: an error rather than no samples
        self.decodes = 0
        self._samples: RowsOnDisk | None = None
        self._lock = threading.Lock()

    def __call__(self) -> RowsOnDisk:
        with self._lock:
            if self._samples is None:
                from extractors.audio import decode_audio_to_file

                try:
                    self._samples = decode_audio_to_file(self.video, self.path, require_audio=self.strict)
                except BaseException:
                    self.path.unlink(missing_ok=True)
                    raise
                self.decodes += 1
            return self._samples

    @property
    def held(self) -> bool:
        """Whether the decoded samples are on disk now."""
        return self._samples is not None

    def release(self) -> None:
        with self._lock:
            self._samples = None
            self.path.unlink(missing_ok=True)


class PipelineRunner:
    def __init__(self, config: PipelineConfig | None = None, checkpoint: str | os.PathLike | None = None,
                 device: str | None = None):
        self.config = config or PipelineConfig()
        if device is not None and device != self.config.device:
            self.config = self.config.model_copy(update={"device": device})
        self.device = self.config.torch_device()
        if self.config.mmap_threshold_mib and not map_large_allocations(int(self.config.mmap_threshold_mib * 2**20)):
            log.info("mmap_threshold_mib not applied: the C library is not glibc (memory may grow with length)")
        self.stages = StageFactory(self.config, self.device)
        from pipeline.scoring import EmotionScorer

        self.scorer = EmotionScorer.load(checkpoint, device=self.device)
        self.stages.acoustic_whisper_blocks = self.scorer.acoustic_whisper_blocks
        self.stages.text_tuned_layers = self.scorer.text_tuned_layers
        self.audio: DecodedAudio | None = None   # the last run's audio (on disk only while stages need it)

    # --------------------------------------------------------------------------------------- run

    def run(self, video: str | os.PathLike, output: str | os.PathLike | None = None, *,
            cast: str | os.PathLike | None = None, num_speakers: int | None = None, force: bool = False,
            strict: bool = False, progress: Progress | None = None,
            on_stage_done: Callable[[str, StageRecord], None] | None = None) -> RunResult:
        started = time.perf_counter()
        video = Path(video)
        output = Path(output) if output is not None else default_output_folder(video)
        info = check_input(video, strict)
        if cast is not None and not Path(cast).is_file():
            raise UserError(f"cast file {cast} not found")
        if num_speakers is not None and num_speakers < 1:
            raise UserError(f"--num-speakers must be at least 1, got {num_speakers}")
        created = check_output(output)
        try:
            return self._run(video, output, info, cast, num_speakers, force, strict, progress, on_stage_done,
                             started)
        except (ExtractorError, UserError):
            if created:  # bad input found late: leave nothing behind
                shutil.rmtree(output, ignore_errors=True)
            raise
        finally:
            if self.audio is not None:
                self.audio.release()   # the decoded samples' file, when a stage failed before the last read

    def _run(self, video, output, info, cast, num_speakers, force, strict, progress, on_stage_done, started):
        report = progress or (lambda stage, fraction: None)
        warnings: list[str] = []
        cache = StageCache(output / STAGE_FOLDER, force=force, on_stage_done=on_stage_done)
        sha = file_sha256(video)
        cfg = self.config
        self.audio = audio = DecodedAudio(video, output / STAGE_FOLDER, strict)

        def settings(name: str) -> dict:
            return asdict(getattr(cfg, name))

        # --- keys: visual and the audio chain (vad -> asr, acoustic) read only the input ------------
        cast_digest = file_sha256(cast) if cast else None
        visual_key = stage_key("visual", sha, {**settings("visual"), "cast": cast_digest},
                               self.stages.model_versions("visual"), [])
        has_audio = info.has_audio
        vad_key = stage_key("vad", sha, settings("vad"), self.stages.model_versions("vad"), [])
        asr_key = stage_key("asr", sha, {**settings("asr"), "model": cfg.asr_model},
                            self.stages.model_versions("asr"), [vad_key])
        acoustic_kind = self.scorer.acoustic_kind   # the features the checkpoint was trained on
        acoustic_stage = "acoustic" if acoustic_kind == "librosa" else "acoustic_whisper"
        acoustic_key = stage_key("acoustic", sha, {**settings("acoustic"), "kind": acoustic_kind,
                                                   "whisper_blocks": self.scorer.acoustic_whisper_blocks},
                                 self.stages.model_versions(acoustic_stage), [vad_key])

        # The mouths in the speech windows (as ASR gave them: splitting a segment never leaves its window) over
        # the visual pass's tracks, which it publishes into the feed as they close.
        from extractors.mouth_motion import MouthSamples, TrackFeed

        mouths_key = stage_key("mouths", sha, {k: settings("speaking")[k] for k in ("sync_fps", "context_s")},
                               self.stages.model_versions("speaking"), [visual_key, asr_key])
        feed = TrackFeed()

        def compute_visual():
            result = self.stages.get("visual")(video, cast_file=cast, on_tracks=feed.publish,
                                               progress=lambda done, total: report("visual", done / max(total, 1e-9)))
            return result.serialize(), {f"features.{tid}": rows for tid, rows in result.features.items()}

        def audio_chain(progress: Progress):
            """vad -> asr, then acoustic frames: (regions, segments as ASR gave them, acoustic data); the frames
            stay in the stage cache until scoring reads them."""
            from extractors.vad import SpeechRegion

            def compute_vad():
                found = self.stages.get("vad").detect(audio(), progress=lambda f: progress("vad", f)) \
                    if has_audio else []
                return {"regions": [r.serialize() for r in found]}, {}

            regions = [SpeechRegion.from_dict(r) for r in cache.run("vad", vad_key, compute_vad)[0]["regions"]]

            def compute_asr():
                found = self.stages.get("asr").transcribe(audio(), regions, progress=lambda f: progress("asr", f)) \
                    if regions else []
                return {"segments": [s.serialize() for s in found]}, {}

            raw = [SpeechSegment.from_dict(s) for s in cache.run("asr", asr_key, compute_asr)[0]["segments"]]

            def compute_acoustic():
                extractor = self.stages.get(acoustic_stage)
                frame_rate = float(extractor.frame_rate if acoustic_kind == "whisper" else extractor.config.frame_rate)
                if not regions:   # no speech: no segment will read acoustic frames
                    dim = extractor.dim if acoustic_kind == "whisper" else extractor.frames(np.zeros(0)).shape[1]
                    return {"frame_rate": frame_rate}, {"frames": np.zeros((0, dim), np.float32)}
                if acoustic_kind != "whisper":
                    return {"frame_rate": frame_rate}, {"frames": extractor.frames(audio())}
                samples = audio()   # the states go to the stage cache a 30 s chunk at a time (280 MB an hour)
                frames = cache.array_writer("acoustic", "frames", (extractor.num_frames(len(samples)), extractor.dim))
                extractor.frames(samples, out=frames, progress=lambda f: progress("acoustic", f))
                return {"frame_rate": frame_rate}, {"frames": frames}

            acoustic_data = cache.run("acoustic", acoustic_key, compute_acoustic)[0]   # frames: read back to score
            progress("acoustic", 1.0)
            return regions, raw, acoustic_data

        beside_measurement: list = []          # the side thread's mouth measurement, for this thread to join
        measurement_known = threading.Event()  # set once it exists, or once the side will not make one

        def audio_then_mouths(progress: Progress):
            """The audio chain, then the mouths of its speech windows as the visual pass settles them."""
            try:
                regions, raw, acoustic_data = audio_chain(progress)

                def compute_mouths():
                    if not raw:
                        return MouthSamples.empty().serialize(), MouthSamples.empty().arrays()
                    detector = self.stages.get("speaking")
                    measurement = detector.measurement(video, raw, feed, lambda d, t: progress("mouths", d / t))
                    beside_measurement.append(measurement)
                    measurement_known.set()

                    def poll():   # raises once the visual pass has failed
                        progress("mouths", measurement.fraction)

                    measurement.work(detector.meter(0), poll)
                    samples = measurement.wait(poll)
                    return samples.serialize(), samples.arrays()

                mouths = cache.run("mouths", mouths_key, compute_mouths)
            finally:
                measurement_known.set()
            return regions, raw, acoustic_data, mouths

        def help_measure_mouths():
            """Once the visual pass is done: this thread's share of the windows the side has not measured."""
            measurement_known.wait()
            if beside_measurement:
                detector = self.stages.get("speaking")
                beside_measurement[0].run([detector.meter(slot) for slot in range(1, max(2, detector.workers))])

        from extractors.visual_features import VisualResult

        audio_cached = all(cache.holds(stage, key) for stage, key in
                           (("vad", vad_key), ("asr", asr_key), ("acoustic", acoustic_key)))
        mouths_data = None
        if cfg.parallel_audio and has_audio and not audio_cached and not cache.holds("visual", visual_key):
            if cfg.mouths_beside:
                visual_data, (regions, raw_segments, acoustic_data, mouths_data) = run_beside(
                    lambda: cache.run("visual", visual_key, compute_visual), audio_then_mouths, report,
                    side_threads=self.stages.audio_threads, then_help=help_measure_mouths)
            else:
                visual_data, (regions, raw_segments, acoustic_data) = run_beside(
                    lambda: cache.run("visual", visual_key, compute_visual), audio_chain, report,
                    side_threads=self.stages.audio_threads)
        else:
            visual_data = cache.run("visual", visual_key, compute_visual)
            regions, raw_segments, acoustic_data = audio_chain(report)
        visual = VisualResult.from_dict(*visual_data)
        del visual_data   # its serialized form (41 MB for an hour); `visual` is what later stages read
        report("visual", 1.0)
        if mouths_data is None:
            def compute_mouths_after():
                samples = MouthSamples.empty()
                if raw_segments and visual.tracks:
                    samples = self.stages.get("speaking").mouth_samples(
                        video, visual.tracks, raw_segments, progress=lambda d, t: report("mouths", d / t))
                return samples.serialize(), samples.arrays()

            mouths_data = cache.run("mouths", mouths_key, compute_mouths_after)
        report("mouths", 1.0)
        mouths = MouthSamples.from_dict(*mouths_data)
        # The pass's own track objects (kept by the feed for the mouths) and the measurement's samples are
        # copies of what `visual` and `mouths` hold; made over the whole pass, among its transient buffers,
        # they pinned pages of a fragmented heap for the rest of the run. Let them go, then trim.
        del mouths_data
        feed.release()
        beside_measurement.clear()
        return_freed_memory()
        if not visual.characters:
            raise MediaError(f"{video}: no faces found in {visual.frames_analysed} analysed frames; a per-character "
                             "timeline needs at least one face on screen")

        # --- audio: what the chain found, then diarization ----------------------------------------
        if not has_audio:
            message = f"{video} has no audio stream: visual-only timeline (no speech, no acoustic or text input)"
            if strict:
                raise MediaError(f"{video} has no audio stream (--strict)")
            log.warning("%s", message)
            warnings.append(message)
        if has_audio and not regions:
            message = f"{video}: no speech found in the audio: visual-only timeline"
            if strict:
                raise MediaError(f"{video}: the audio holds no speech (--strict)")
            log.warning("%s", message)
            warnings.append(message)

        expected = num_speakers if num_speakers is not None else None
        prior = len(visual.characters)
        diar_key = stage_key("diarization", sha, {**settings("diarization"), "num_speakers": expected,
                                                  "prior": prior},
                             self.stages.model_versions("diarization"), [vad_key])

        def compute_diarization():
            turns = []
            if regions:
                turns = self.stages.get("diarization").diarize(
                    audio(), regions, num_speakers=expected, expected_speakers=prior,
                    progress=lambda f: report("diarization", f))
            return {"turns": [t.serialize() for t in turns]}, {}

        turns = [SpeakerTurn.from_dict(t) for t in cache.run("diarization", diar_key, compute_diarization)[0]["turns"]]
        from extractors.diarization import split_by_speaker

        segments = split_by_speaker(raw_segments, turns) if raw_segments else []
        segments = split_at_pauses(segments, cfg.moments.split_pause_s, regions)
        # What later stages read is the final segmentation, whatever settings made it: key on its content.
        segments_key = content_key([s.serialize() for s in segments])

        # --- who is talking ----------------------------------------------------------------------
        speaking_key = stage_key("speaking", sha, settings("speaking"), self.stages.model_versions("speaking"),
                                 [visual_key, vad_key, segments_key, mouths_key])

        def compute_speaking():
            from extractors.active_speaker import ActiveSpeakerResult

            if not segments:
                return ActiveSpeakerResult([], [], {}).serialize(), {}
            result = self.stages.get("speaking").attribute(visual.tracks, visual.character_of_track(), audio(),
                                                           segments, regions, mouths)
            return result.serialize(), {}

        from extractors.active_speaker import ActiveSpeakerResult

        speaking = ActiveSpeakerResult.from_dict(cache.run("speaking", speaking_key, compute_speaking)[0])
        audio.release()   # the last stage that reads it
        attribution = speaking.by_segment()
        for segment in segments:
            a = attribution.get(segment.id)
            if a is not None:
                segment.character, segment.speaker_confidence = a.character, a.confidence

        # --- features ----------------------------------------------------------------------------
        text_key = stage_key("text", sha, settings("text"), self.stages.model_versions("text"), [segments_key])

        def compute_text():
            encoder = self.stages.get("text")
            arrays = {}
            for i, segment in enumerate(segments):
                arrays[f"text.{segment.id}"] = encoder.token_embeddings(segment.text)
                report("text", (i + 1) / len(segments))
            return {"segments": [s.id for s in segments]}, arrays

        cache.run("text", text_key, compute_text)

        # --- scoring -----------------------------------------------------------------------------
        speaker_of = {s.id: s.character for s in segments}
        moments = build_moments(segments, info.duration, speaker_of, cfg.moments)
        scoring_key = stage_key("scoring", sha, {"moments": asdict(cfg.moments), "checkpoint": self.scorer.digest},
                                {}, [visual_key, speaking_key, acoustic_key, text_key])

        def compute_scoring():
            # The token embeddings are read back from the stage cache only now, and let go with the scores;
            # the acoustic frames (280 MB an hour) are read a segment's span at a time.
            inputs = self._modality_inputs(moments, visual, segments,
                                           cache.stored_arrays("acoustic", acoustic_key)["frames"],
                                           float(acoustic_data["frame_rate"]), cache.stored_arrays("text", text_key))
            scores = self.scorer.score(moments, inputs, cfg.moments, progress=lambda f: report("scoring", f))
            return {"scores": scores}, {}

        scores = cache.run("scoring", scoring_key, compute_scoring)[0]["scores"]
        report("scoring", 1.0)

        document = self._document(video, sha, info, visual, segments, moments, scores, cache, warnings, output)
        path = write_timeline(document, output / TIMELINE_NAME)
        return RunResult(path, document, dict(cache.records), time.perf_counter() - started, warnings)

    # ------------------------------------------------------------------------------------ inputs

    def _modality_inputs(self, moments: list[Moment], visual, segments: list[SpeechSegment],
                         acoustic_frames: np.ndarray, frame_rate: float, text_arrays: dict
                         ) -> Iterator[list[ModalityInputs]]:
        """Per moment, the inputs of every character on screen in it (empty lists: nobody visible), made as
        the scorer reads them (so a long video's inputs are never all held at once)."""
        from extractors.acoustic_features import D_ACOUSTIC
        from extractors.text_features import D_TEXT

        by_id = {s.id: s for s in segments}
        for moment in moments:
            entries = []
            for character in visual.characters:
                _, rows = visual.sequence(character.id, moment.start, moment.end)
                if not len(rows):
                    continue
                speaks = moment.segment is not None and moment.speaker == character.id
                text = np.zeros((0, D_TEXT), np.float32)
                acoustic = np.zeros((0, D_ACOUSTIC), np.float32)
                if speaks:
                    segment = by_id[moment.segment]
                    text = text_arrays.get(f"text.{segment.id}", text)
                    first = max(0, int(math.floor(segment.start * frame_rate)))
                    last = min(len(acoustic_frames), int(math.ceil(segment.end * frame_rate)))
                    acoustic = acoustic_frames[first:last]
                entries.append(ModalityInputs(   # as extracted; the scorer prepares them as its checkpoint wants
                    moment=moment.id, character=character.id, role="speaker" if speaks else "listener",
                    text=text, visual=rows, acoustic=acoustic, personality=character.personality))
            yield entries

    # ---------------------------------------------------------------------------------- document

    def _document(self, video, sha, info, visual, segments, moments, scores, cache, warnings, output) -> dict:
        from pipeline.thumbnails import write_thumbnails

        characters = []
        thumbnails = write_thumbnails(video, visual, output / "thumbnails")
        speaking_time = {}
        for s in segments:
            if s.character is not None:
                speaking_time[s.character] = speaking_time.get(s.character, 0.0) + (s.end - s.start)
        analysis_period = 1.0 / self.config.visual.analysis_fps
        for character in visual.characters:
            characters.append({
                "id": character.id, "name": character.name, "tracks": list(character.track_ids),
                "screen_time": round(_screen_time(visual, character, analysis_period), 3),
                "speaking_time": round(speaking_time.get(character.id, 0.0), 3),
                "thumbnail": thumbnails.get(character.id),
                "embedding": [round(float(v), 5) for v in np.asarray(character.embedding).ravel()] or None,
            })
        models = {}
        for stage in ("visual", "vad", "asr", "diarization", "speaking", "text"):
            for name in self.stages.model_versions(stage):
                models[name] = self.stages.model_info(name)
        models["ramer"] = {"source": "explicit" if self.scorer.explicit else "package",
                           "version": self.scorer.version, "path": str(self.scorer.path)}
        return {
            "schema_version": SCHEMA_VERSION,
            "video": {"path": str(video), "sha256": sha, "duration": info.duration, "fps": info.fps,
                      "width": info.width, "height": info.height, "has_audio": info.has_audio,
                      "start_offset": float(getattr(info, "video_start", 0.0) or 0.0)},
            "model": self.scorer.model_entry(),
            "characters": characters,
            "faces": _faces_entry(visual, self.config),
            "segments": [{
                "id": s.id, "start": round(s.start, 3), "end": round(s.end, 3), "character": s.character,
                "speaker_confidence": round(float(min(1.0, max(0.0, s.speaker_confidence))), 4),
                "voice": s.turn, "text": s.text,
                "words": [{"text": w.text, "start": round(w.start, 3), "end": round(w.end, 3),
                           "prob": round(w.prob, 4)} for w in s.words],
            } for s in segments],
            "timeline": scores,
            "provenance": {
                "package_version": package_version(),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "config": _finite(self.config.model_dump(mode="json")),
                "models": models,
                "device": self.device,
                "stages": {name: record.serialize() for name, record in cache.records.items()},
                "warnings": list(warnings),
            },
        }


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ramer-timelines")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "0+unknown"


def _faces_entry(visual, config) -> dict:
    from extractors.expression import EXPRESSION_LABELS
    from extractors.identity import face_embedder_name
    from extractors.visual_features import D_EXPRESSION

    character_of = visual.character_of_track()
    return {
        "analysis_fps": float(config.visual.analysis_fps),
        "embedder": face_embedder_name(config.visual.embedder),
        "expression_labels": list(EXPRESSION_LABELS),
        "shots": [{"index": s.index, "start": round(s.start, 3), "end": round(s.end, 3)} for s in visual.shots],
        "tracks": [{
            "id": track.id, "character": character_of.get(track.id), "shot": track.shot,
            "detections": [{"t": round(d.t, 3), "box": [round(float(v), 1) for v in d.box],
                            "score": round(float(d.score), 4),
                            "expression": [round(float(p), 4) for p in row[:D_EXPRESSION]]}
                           for d, row in zip(track.detections, visual.features[track.id], strict=True)],
        } for track in visual.tracks],
    }


def _screen_time(visual, character, period: float) -> float:
    """Seconds the character's face is on screen: union of its detections, each covering one sampling period."""
    times = sorted({d.t for tid in character.track_ids for d in visual.track(tid).detections})
    total, run_start, previous = 0.0, None, None
    for t in times:
        if previous is None or t - previous > 1.5 * period:
            if run_start is not None:
                total += previous - run_start + period
            run_start = t
        previous = t
    if run_start is not None:
        total += previous - run_start + period
    return min(total, visual.info.duration) if visual.info.duration else total


def _finite(value):
    """JSON-safe configuration: infinite limits become the string "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


__all__ = ["MODALITIES", "PipelineRunner", "RunResult", "check_input", "check_output"]
