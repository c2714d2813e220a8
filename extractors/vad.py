"""Voice activity detection with the Silero VAD model that the silero-vad package ships.

Input is the 16 kHz mono float32 array from `extractors.audio.load_audio`, or the same samples on
disk (`extractors.audio.decode_audio_to_file`); silero-vad's own file reader needs torchaudio, which
does not import on CPU-only torch. Output is a list of speech
regions in seconds; everything downstream (speech recognition, diarization) only looks inside them,
which is what keeps silence from turning into hallucinated text.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from extractors.audio import SAMPLE_RATE, AudioSamples, as_samples
from extractors.io import torch_threads
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)

_WINDOW = 512    # samples silero judges at a time at 16 kHz (32 ms)
_BLOCK_S = 32    # seconds of audio read at once (a whole number of windows)


@dataclass
class SpeechRegion:
    start: float  # seconds
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    def serialize(self) -> dict:
        return {"start": self.start, "end": self.end}

    @classmethod
    def from_dict(cls, data: dict) -> SpeechRegion:
        return cls(float(data["start"]), float(data["end"]))


@dataclass
class VadConfig:
    threshold: float = 0.5             # speech probability above which a 32 ms frame is speech
    min_speech_s: float = 0.25         # shorter bursts are dropped (clicks, breaths)
    min_silence_s: float = 0.1         # a region ends only after this much silence
    speech_pad_s: float = 0.03         # padding each side, so word onsets are not clipped
    max_speech_s: float = float("inf")  # longer regions are split at the longest pause


def _import_silero():
    """silero's rules from window probabilities to regions. silero_vad sets torch's thread count to 1 on
    import; keep the process's setting."""
    threads = torch.get_num_threads()
    from silero_vad.utils_vad import get_speech_timestamps_from_probs

    torch.set_num_threads(threads)
    return get_speech_timestamps_from_probs


class VoiceActivityDetector:
    """Finds the speech regions of 16 kHz mono audio."""

    def __init__(self, config: VadConfig | None = None, model_path: str | os.PathLike | None = None):
        self.config = config or VadConfig()
        self._from_probabilities = _import_silero()
        path = resolve_model("silero-vad", model_path)
        # TorchScript archive: loading it runs no Python code. The model is tiny and sequential
        # (a 32 ms step at a time), so it stays on the CPU.
        self.model = torch.jit.load(str(path), map_location="cpu").eval()

    def __call__(
        self, audio: AudioSamples, progress: Callable[[float], None] | None = None
    ) -> list[SpeechRegion]:
        return self.detect(audio, progress)

    def detect(
        self, audio: AudioSamples, progress: Callable[[float], None] | None = None
    ) -> list[SpeechRegion]:
        """Speech regions (seconds, sorted, non-overlapping) of `audio` sampled at 16 kHz.

        The model reads the audio one 32 ms window at a time, as silero's ``get_speech_timestamps`` does,
        but from blocks of ``_BLOCK_S`` seconds, so audio on disk is never read whole; its probabilities then
        go through silero's own rules (``get_speech_timestamps_from_probs``): the same regions as
        silero's one call. `progress` receives the fraction done, 0..1, like the other stages.
        """
        audio = as_samples(audio)
        if len(audio) < _WINDOW:  # shorter than one model frame: nothing to judge
            return []
        cfg = self.config
        self.model.reset_states()
        probabilities: list[float] = []
        block = _BLOCK_S * SAMPLE_RATE   # a multiple of the window: windows fall where silero's would
        with torch.inference_mode(), torch_threads(1):
            for first in range(0, len(audio), block):
                samples = torch.from_numpy(np.ascontiguousarray(audio[first: first + block], np.float32))
                for start in range(0, len(samples), _WINDOW):
                    window = samples[start: start + _WINDOW]
                    if len(window) < _WINDOW:
                        window = torch.nn.functional.pad(window, (0, _WINDOW - len(window)))
                    probabilities.append(self.model(window, SAMPLE_RATE).item())
                if progress is not None:
                    progress(min(1.0, (first + block) / len(audio)))
        stamps = self._from_probabilities(
            probabilities,
            sampling_rate=SAMPLE_RATE,
            threshold=cfg.threshold,
            min_speech_duration_ms=int(cfg.min_speech_s * 1000),
            min_silence_duration_ms=int(cfg.min_silence_s * 1000),
            speech_pad_ms=int(cfg.speech_pad_s * 1000),
            max_speech_duration_s=cfg.max_speech_s,
            audio_length_samples=len(audio),
        )
        regions = [SpeechRegion(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
        log.debug("VAD: %d speech regions, %.1f s of %.1f s", len(regions),
                  sum(r.duration for r in regions), len(audio) / SAMPLE_RATE)
        return regions


def speech_mask(regions: list[SpeechRegion], num_frames: int, frame_rate: float) -> np.ndarray:
    """Boolean [num_frames] mask, True where a frame centre lies inside a speech region."""
    centres = (np.arange(num_frames) + 0.5) / frame_rate
    mask = np.zeros(num_frames, dtype=bool)
    for region in regions:
        mask |= (centres >= region.start) & (centres < region.end)
    return mask
