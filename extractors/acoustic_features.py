"""Acoustic feature sequences per (time span, speaker): the acoustic input of RAMer, two kinds.

``WhisperEncoderFeatures`` (what the default checkpoint reads): the states of the first
``DEFAULT_WHISPER_BLOCKS`` blocks of the whisper-tiny.en encoder, [T, 384] at 50 frames/s. On RAVDESS
with actors held out they carry far more emotion than the hand-made set below (unweighted accuracy of
a logistic regression 0.75 against 0.45; ``benchmarks/acoustic_layers.py``).

``AcousticFeatureExtractor``: `[T, D_ACOUSTIC]` hand-made features per 10 ms frame (25 ms analysis window),
computed with librosa over the whole audio once and then
sliced to what one speaker says inside one span. The audio is analysed in chunks of
``AcousticConfig.chunk_seconds`` with enough context on each side for the widest analysis window, so the
memory needed is bounded whatever the length (the whole-file version held ~3.6 MB per second of audio,
13 GB for an hour) and the result is the same as analysing the file at once:

- 13 MFCCs with deltas and delta-deltas (spectral envelope: what is said, and how tense or breathy)
- log energy and its delta (loudness, arousal)
- log f0 from YIN (0 where unvoiced) and its delta (intonation)
- periodicity, the peak of the normalised autocorrelation in the pitch range (voice quality:
  a harmonics-to-noise proxy; low for breathy, creaky or noisy voice)
- spectral flatness, log spectral centroid, zero-crossing rate (voice quality, brightness)

The features are not normalised: RAMer's modality encoder starts with LayerNorm, and per-speaker
normalisation would remove the level differences that carry emotion.

A character who does not speak in the span gets an empty `(0, D_ACOUSTIC)` array.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import librosa
import numpy as np
import scipy.fft

from extractors.audio import SAMPLE_RATE, AudioSamples, as_samples
from extractors.contracts import SpeakerTurn

log = logging.getLogger(__name__)

N_MFCC = 13
FEATURE_NAMES: tuple[str, ...] = (
    *(f"mfcc{i}" for i in range(N_MFCC)),
    *(f"mfcc{i}_delta" for i in range(N_MFCC)),
    *(f"mfcc{i}_delta2" for i in range(N_MFCC)),
    "log_energy", "log_energy_delta",
    "log_f0", "log_f0_delta",
    "periodicity", "spectral_flatness", "log_spectral_centroid", "zero_crossing_rate",
)
D_ACOUSTIC = len(FEATURE_NAMES)  # 47
_CONTEXT_FRAMES = 8   # frames of context on each side of a chunk: 1280 samples > YIN's half window of 512
# Whisper encoder blocks run for the default checkpoint's features: chosen on the validation actors of RAVDESS
# (benchmarks/acoustic_layers.py: 2 and 3 blocks tied there, the cheaper was kept)
DEFAULT_WHISPER_BLOCKS = 2
_TOP_DB = 80.0        # librosa.power_to_db's default dynamic range below the loudest mel bin


@dataclass
class AcousticConfig:
    hop_length: int = 160      # 10 ms at 16 kHz: FRAME_RATE = 100 frames per second
    n_fft: int = 400           # 25 ms analysis window
    n_mels: int = 40
    fmin_hz: float = 60.0      # pitch search range, covering low male to high child voices
    fmax_hz: float = 500.0
    voicing_threshold: float = 0.45  # periodicity below it: unvoiced (log f0 set to 0)
    chunk_seconds: float = 10.0      # audio analysed at once; bounds memory, does not change the result

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.hop_length


class AcousticFeatureExtractor:
    """Frame-level acoustic features of 16 kHz mono audio, sliced per speaker and span."""

    def __init__(self, config: AcousticConfig | None = None):
        self.config = config or AcousticConfig()

    def frames(self, audio: AudioSamples) -> np.ndarray:
        """Features of every frame of `audio`: [T, D_ACOUSTIC] float32, frame t centred at t / frame_rate.

        Audio on disk is read whole (the features are 80 bytes per frame at 50 frames/s: the samples are
        what is large; the deltas and normalisation want every frame at once).
        """
        cfg = self.config
        y = as_samples(audio)[:]
        if len(y) < cfg.n_fft:
            return np.zeros((0, D_ACOUSTIC), np.float32)
        hop = cfg.hop_length
        num_frames = 1 + len(y) // hop                 # librosa's centred framing
        features = np.empty((num_frames, D_ACOUSTIC), np.float32)                          # [T, D]
        mel_db = np.empty((cfg.n_mels, num_frames), np.float32)                             # [M, T]
        log_energy = np.empty(num_frames, np.float32)                                       # [T]
        log_f0 = np.empty(num_frames, np.float64)      # float64 as before, so its delta is unchanged
        chunk = max(1, int(round(cfg.chunk_seconds * cfg.frame_rate)))
        for first in range(0, num_frames, chunk):
            last = min(num_frames, first + chunk)
            # Frame t sees samples t * hop +- 512 at most (YIN's 1024-sample window): with _CONTEXT_FRAMES
            # of real signal on each side, the kept frames never touch the chunk's edge padding.
            lo = max(0, first - _CONTEXT_FRAMES)
            piece = y[lo * hop: min(len(y), (last + _CONTEXT_FRAMES) * hop)]
            keep = slice(first - lo, last - lo)
            self._chunk(piece, keep, mel_db[:, first:last], log_energy[first:last], log_f0[first:last],
                        features[first:last])
        # power_to_db's top_db floor is relative to the loudest bin of the whole file
        np.maximum(mel_db, mel_db.max() - _TOP_DB, out=mel_db)
        for first in range(0, num_frames, chunk):
            part = mel_db[:, first: first + chunk]
            features[first: first + chunk, :N_MFCC] = scipy.fft.dct(part, axis=0, type=2, norm="ortho")[:N_MFCC].T
        del mel_db
        width = min(9, num_frames if num_frames % 2 else num_frames - 1)
        if width >= 3:
            def delta(x: np.ndarray, order: int = 1) -> np.ndarray:
                return librosa.feature.delta(x, width=width, order=order)
        else:  # too short for a regression window
            def delta(x: np.ndarray, order: int = 1) -> np.ndarray:
                return np.zeros_like(x)
        mfcc = np.ascontiguousarray(features[:, :N_MFCC].T)                                  # [13, T]
        features[:, N_MFCC: 2 * N_MFCC] = delta(mfcc).T
        features[:, 2 * N_MFCC: 3 * N_MFCC] = delta(mfcc, 2).T
        del mfcc
        column = 3 * N_MFCC
        features[:, column] = log_energy
        features[:, column + 1] = delta(log_energy[None])[0]
        features[:, column + 2] = log_f0
        features[:, column + 3] = delta(log_f0[None])[0]
        return features

    def _chunk(self, y: np.ndarray, keep: slice, mel_db: np.ndarray, log_energy: np.ndarray,
               log_f0: np.ndarray, features: np.ndarray) -> None:
        """Frame-local features of one chunk of samples, frames ``keep`` written into the output views."""
        cfg = self.config
        power = np.abs(librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length)) ** 2  # [F, t]
        mel = librosa.feature.melspectrogram(S=power, sr=SAMPLE_RATE, n_mels=cfg.n_mels)
        mel_db[:] = librosa.power_to_db(mel[:, keep], top_db=None)                          # [M, k]
        num_frames = power.shape[1]
        log_energy[:] = np.log(power[:, keep].sum(0) / cfg.n_fft + 1e-10)
        f0 = librosa.yin(y, fmin=cfg.fmin_hz, fmax=cfg.fmax_hz, sr=SAMPLE_RATE,
                         frame_length=1024, hop_length=cfg.hop_length)[:num_frames][keep]
        periodicity = _periodicity(y, cfg)[:num_frames][keep]
        log_f0[:] = np.where(periodicity >= cfg.voicing_threshold, np.log(f0), 0.0)
        magnitude = np.sqrt(power[:, keep])
        column = 3 * N_MFCC + 4
        features[:, column] = periodicity
        features[:, column + 1] = librosa.feature.spectral_flatness(S=magnitude)[0]
        features[:, column + 2] = np.log(librosa.feature.spectral_centroid(S=magnitude, sr=SAMPLE_RATE) + 1.0)[0]
        features[:, column + 3] = librosa.feature.zero_crossing_rate(
            y, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0, keep]

    def span(self, frames: np.ndarray, start: float, end: float) -> np.ndarray:
        """Rows of `frames` whose centre lies in [start, end)."""
        return _span(frames, self.config.frame_rate, start, end)

    def speaker_span(
        self, frames: np.ndarray, turns: list[SpeakerTurn], speaker: str, start: float, end: float
    ) -> np.ndarray:
        """[T, D_ACOUSTIC] of what `speaker` says inside [start, end): the frames of the speaker's
        turns clipped to the span, in time order; (0, D_ACOUSTIC) when the speaker is silent there."""
        return _speaker_span(frames, self.config.frame_rate, turns, speaker, start, end)


class WhisperEncoderFeatures:
    """The learned acoustic representation: Whisper encoder states, [T, d_model] at 50 frames/s.

    The openai-whisper encoder (PyTorch) of the same packaged weights as the speech recogniser (tiny.en:
    384-d, 4 blocks), run over 30 s chunks, stopped after ``blocks`` transformer blocks. The early blocks
    carry more of how something is said than the last one, which is shaped for the decoder's words: on
    RAVDESS with actors held out, a logistic regression on pooled states reaches 0.70-0.75 unweighted
    accuracy after 1-2 blocks, 0.64-0.69 after 3-4 and 0.45 on the librosa set
    (``benchmarks/acoustic_layers.py``). ``blocks = None`` runs the whole encoder, ``ln_post`` included.
    """

    frame_rate = 50.0      # one state per 20 ms (two 10 ms mel frames)
    _chunk_s = 30          # Whisper's fixed input length

    def __init__(self, model: str = "whisper-tiny.en", model_path: str | os.PathLike | None = None,
                 blocks: int | None = None, device: str | None = None):
        """``model_path``: an openai-whisper ``.pt`` checkpoint; otherwise the cache, or the packaged
        CTranslate2 model converted once (see :func:`extractors.asr.resolve_openai_checkpoint`)."""
        import torch

        from extractors.asr import resolve_openai_checkpoint
        from extractors.whisper_convert import load_openai_whisper

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        whisper_model = load_openai_whisper(resolve_openai_checkpoint(model, model_path), device=self.device)
        self.encoder = whisper_model.encoder
        self.n_mels = whisper_model.dims.n_mels
        depth = len(self.encoder.blocks)
        if blocks is not None and not 1 <= blocks <= depth:
            raise ValueError(f"{model} has {depth} encoder blocks; blocks must be 1..{depth} or None, got {blocks}")
        self.blocks = blocks
        self.dim = int(whisper_model.dims.n_audio_state)
        del whisper_model.decoder   # only the encoder is used

    def _encode(self, chunk: np.ndarray) -> np.ndarray:
        """States of one chunk of at most 30 s: [1500, dim] (the chunk is zero-padded to 30 s, as in Whisper)."""
        import torch
        import torch.nn.functional as F
        import whisper

        encoder = self.encoder
        audio = whisper.pad_or_trim(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))
        with torch.inference_mode():
            mel = whisper.log_mel_spectrogram(audio.to(self.device), self.n_mels)[None]      # [1, n_mels, 3000]
            if self.blocks is None:
                states = encoder(mel)
            else:   # AudioEncoder.forward, stopped after the first `blocks` blocks
                x = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).permute(0, 2, 1)        # [1, 1500, dim]
                x = x + encoder.positional_embedding.to(x.dtype)
                for block in encoder.blocks[: self.blocks]:
                    x = block(x)
                states = x
        return states[0].float().cpu().numpy()                                             # [1500, dim]

    def num_frames(self, num_samples: int) -> int:
        """States :meth:`frames` gives for ``num_samples`` samples of audio."""
        full, rest = divmod(num_samples, self._chunk_s * SAMPLE_RATE)
        return full * int(self._chunk_s * self.frame_rate) + int(np.ceil(rest / SAMPLE_RATE * self.frame_rate))

    def frames(self, audio: AudioSamples, out=None, progress: Callable[[float], None] | None = None):
        """[T, dim] float32, state t centred at (t + 0.5) / 50 s.

        ``out``: where the states go, [num_frames(len(audio)), dim], written a 30 s chunk at a time (for
        example a :class:`extractors.disk_arrays.RowsWriter`, so an hour's 280 MB of states never sit in
        memory); returned. Audio on disk is read a chunk at a time.
        """
        audio = as_samples(audio)
        chunk = self._chunk_s * SAMPLE_RATE
        per_chunk = int(self._chunk_s * self.frame_rate)                     # 1500 states per full chunk
        total = self.num_frames(len(audio))
        if out is None:
            out = np.empty((total, self.dim), np.float32)   # filled in place: one copy of the states (4.6 MB a minute)
        elif tuple(out.shape) != (total, self.dim):
            raise ValueError(f"out has shape {tuple(out.shape)}; {len(audio)} samples give {(total, self.dim)}")
        for index, first in enumerate(range(0, len(audio), chunk)):
            part = audio[first: first + chunk]
            states = int(np.ceil(len(part) / SAMPLE_RATE * self.frame_rate))
            out[index * per_chunk: index * per_chunk + states] = self._encode(part)[:states]
            if progress is not None:
                progress(min(1.0, (first + chunk) / len(audio)))
        return out

    def speaker_span(
        self, frames: np.ndarray, turns: list[SpeakerTurn], speaker: str, start: float, end: float
    ) -> np.ndarray:
        return _speaker_span(frames, self.frame_rate, turns, speaker, start, end, centre=0.5)


def _span(frames: np.ndarray, frame_rate: float, start: float, end: float, centre: float = 0.0) -> np.ndarray:
    """Rows t whose centre (t + centre) / frame_rate lies in [start, end)."""
    first, last = int(np.ceil(start * frame_rate - centre)), int(np.ceil(end * frame_rate - centre))
    return frames[max(0, first): max(0, min(len(frames), last))]


def _speaker_span(frames: np.ndarray, frame_rate: float, turns: list[SpeakerTurn], speaker: str,
                  start: float, end: float, centre: float = 0.0) -> np.ndarray:
    pieces = [
        _span(frames, frame_rate, max(start, turn.start), min(end, turn.end), centre)
        for turn in sorted(turns, key=lambda t: t.start)
        if turn.speaker == speaker and turn.end > start and turn.start < end
    ]
    pieces = [p for p in pieces if len(p)]
    return np.concatenate(pieces) if pieces else np.zeros((0, frames.shape[1]), np.float32)


def _periodicity(y: np.ndarray, cfg: AcousticConfig) -> np.ndarray:
    """Peak of the normalised autocorrelation at pitch lags, per frame ([T] in [0, 1])."""
    frame_length = 2 * int(SAMPLE_RATE / cfg.fmin_hz)  # two periods of the lowest pitch
    padded = np.pad(y, frame_length // 2)
    frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=cfg.hop_length).T  # [T, L]
    frames = frames - frames.mean(1, keepdims=True)
    frames = frames * np.hanning(frame_length)[None]
    spectrum = np.fft.rfft(frames, n=2 * frame_length)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2)[:, :frame_length]                     # [T, L]
    # Divide by the window's own autocorrelation so that a periodic signal peaks near 1.
    window_ac = np.correlate(np.hanning(frame_length), np.hanning(frame_length), "full")[frame_length - 1:]
    autocorr = autocorr / np.maximum(window_ac[None], 1e-3 * window_ac[0])
    energy = autocorr[:, :1]
    lo, hi = int(SAMPLE_RATE / cfg.fmax_hz), int(SAMPLE_RATE / cfg.fmin_hz)
    peak = autocorr[:, lo:hi].max(1, keepdims=True)
    return np.clip(np.where(energy > 1e-8, peak / np.maximum(energy, 1e-8), 0.0)[:, 0], 0.0, 1.0)
