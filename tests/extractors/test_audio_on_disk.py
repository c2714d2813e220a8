"""The audio stages on audio that stays on disk (`decode_audio_to_file`), as `pipeline run` gives it them.

An hour at 16 kHz is 230 MB; held through the visual pass beside the hour's Whisper states it was the peak of
a 60-minute run. Each stage must give exactly what it gives on the array in memory, and read no more than a
bounded span at once (recorded by wrapping the reader).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from extractors.audio import SAMPLE_RATE, decode_audio_to_file, load_audio
from extractors.disk_arrays import RowsOnDisk, RowsWriter
from extractors.errors import MediaError
from tests.extractors.test_audio import make_video_without_audio, write_flac
from tests.extractors.test_audio_gaps import write_clip_with_hole


@pytest.fixture(scope="module")
def speech(data_dir, media_dir) -> np.ndarray:
    """96 s of real speech with silences: the pyannote call (30 s, two voices), JFK (11 s), repeated."""
    call = load_audio(data_dir / "pyannote_sample" / "sample.wav")
    jfk = load_audio(media_dir / "jfk.flac")
    pause = np.zeros(2 * SAMPLE_RATE, np.float32)
    return np.concatenate([call, pause, jfk, pause, call, pause, jfk, pause, jfk[: 3 * SAMPLE_RATE]])


@pytest.fixture
def on_disk(speech, tmp_path, monkeypatch):
    """(the speech on disk, the longest read in samples so far: a one-item list)."""
    path = tmp_path / "speech.f32"
    speech.tofile(path)
    longest = [0]
    read = RowsOnDisk._read

    def recording_read(self, start, stop):
        longest[0] = max(longest[0], stop - start)
        return read(self, start, stop)

    monkeypatch.setattr(RowsOnDisk, "_read", recording_read)
    return RowsOnDisk.raw(path), longest


def test_decoding_to_a_file_gives_the_samples_load_audio_gives(tmp_path, media_dir):
    for source in (media_dir / "visualvoice_interview.mp4", media_dir / "jfk.flac"):
        on_disk = decode_audio_to_file(source, tmp_path / f"{source.stem}.f32")
        assert np.array_equal(on_disk[:], load_audio(source)), source.name
    holed = tmp_path / "hole.mp4"   # a hole in the audio timestamps stays silence, as in memory
    write_clip_with_hole(holed)
    assert np.array_equal(decode_audio_to_file(holed, tmp_path / "hole.f32")[:], load_audio(holed))


def test_decoding_to_a_file_holds_no_copy_of_the_signal(tmp_path, media_dir):
    signal = np.tile(load_audio(media_dir / "jfk.flac"), 11)           # 121 s, 7.7 MB
    path = write_flac(tmp_path / "long.flac", signal)
    size = signal.nbytes
    del signal
    tracemalloc.start()
    try:
        on_disk = decode_audio_to_file(path, tmp_path / "long.f32")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(on_disk) * 4 == size
    assert peak < size / 20, f"decoding to a file peaked at {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB of audio"


def test_without_an_audio_stream_or_a_file(tmp_path):
    silent = tmp_path / "silent.mp4"
    make_video_without_audio(silent)
    assert len(decode_audio_to_file(silent, tmp_path / "silent.f32")) == 0
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio_to_file(silent, tmp_path / "strict.f32", require_audio=True)
    with pytest.raises(MediaError, match="not found"):
        decode_audio_to_file(tmp_path / "missing.mp4", tmp_path / "missing.f32")
    assert not (tmp_path / "missing.f32").exists()


def test_vad_on_disk_finds_the_same_regions_reading_32_s_at_a_time(speech, on_disk):
    from extractors.vad import VoiceActivityDetector

    audio, longest = on_disk
    vad = VoiceActivityDetector()
    in_memory = vad.detect(speech)
    assert len(in_memory) >= 8
    assert vad.detect(audio) == in_memory
    assert longest[0] <= 32 * SAMPLE_RATE


def test_asr_on_disk_gives_the_same_segments_reading_a_window_at_a_time(speech, on_disk):
    from extractors.asr import AsrConfig, SpeechRecognizer
    from extractors.vad import VoiceActivityDetector

    audio, longest = on_disk
    regions = VoiceActivityDetector().detect(speech)
    recognizer = SpeechRecognizer(AsrConfig(window_s=40.0))
    in_memory = recognizer.transcribe(speech, regions)
    assert sum(len(s.words) for s in in_memory) > 100
    assert [s.serialize() for s in recognizer.transcribe(audio, regions)] == [s.serialize() for s in in_memory]
    assert longest[0] <= 40 * SAMPLE_RATE


def test_whisper_states_on_disk_are_written_and_read_a_chunk_at_a_time(speech, on_disk, tmp_path):
    from extractors.acoustic_features import WhisperEncoderFeatures

    audio, longest = on_disk
    encoder = WhisperEncoderFeatures(blocks=2, device="cpu")
    in_memory = encoder.frames(speech)
    assert in_memory.shape == (encoder.num_frames(len(speech)), encoder.dim)
    with RowsWriter(tmp_path / "states.npy", in_memory.shape) as out:
        encoder.frames(audio, out=out)
    assert np.array_equal(np.load(tmp_path / "states.npy"), in_memory)
    assert longest[0] <= 30 * SAMPLE_RATE
    with pytest.raises(ValueError, match="out has shape"):
        encoder.frames(audio, out=np.zeros((3, encoder.dim), np.float32))


def test_diarization_and_the_speech_envelope_on_disk(speech, on_disk):
    from extractors.active_speaker import speech_envelope
    from extractors.diarization import SpeakerDiarizer, voice_mel
    from extractors.vad import VoiceActivityDetector

    audio, longest = on_disk
    regions = VoiceActivityDetector().detect(speech)
    # The loudness gain comes from a mean square summed by blocks on disk: equal to float32 rounding.
    np.testing.assert_allclose(voice_mel(audio), voice_mel(speech), rtol=1e-5, atol=1e-9)
    assert longest[0] <= 61 * SAMPLE_RATE
    diarizer = SpeakerDiarizer()
    in_memory = diarizer.diarize(speech, regions)
    assert len({t.speaker for t in in_memory}) >= 2
    assert [t.serialize() for t in diarizer.diarize(audio, regions)] == [t.serialize() for t in in_memory]
    longest[0] = 0
    times = np.arange(40.0, 52.0, 0.04)
    assert np.array_equal(speech_envelope(audio, times, regions), speech_envelope(speech, times, regions))
    assert longest[0] <= 12.1 * SAMPLE_RATE   # the span the windows cover, read once
