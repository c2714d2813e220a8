"""Speech recognition on real audio with both backends, word timestamps, silence, languages."""

from __future__ import annotations

from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch
from whisper.normalizers import EnglishTextNormalizer

from extractors.asr import AsrConfig, SpeechRecognizer
from extractors.audio import SAMPLE_RATE, load_audio
from extractors.errors import ExtractorError, ModelNotFoundError
from extractors.model_store import resolve_model
from extractors.whisper_convert import convert_ct2_to_openai_whisper, read_ct2_model

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
normalize = EnglishTextNormalizer()


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalize(reference), normalize(hypothesis))


def stm_text(path) -> str:
    return " ".join(" ".join(line.split()[5:]) for line in path.read_text().splitlines() if line.strip())


@pytest.fixture(scope="module")
def recognizer():
    return SpeechRecognizer(AsrConfig())


@pytest.fixture(scope="module")
def jfk(media_dir):
    return load_audio(media_dir / "jfk.flac")


def check_jfk(segments):
    text = " ".join(s.text for s in segments)
    assert wer(JFK, text) <= 0.05, text
    words = [w for s in segments for w in s.words]
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(0.0 <= w.start <= w.end <= 11.0 for w in words)
    by_text = {normalize(w.text): w for w in words}
    # "americans" is said around 1.5-2.3 s, the last "country" ends near 10.4 s.
    assert 1.2 < by_text["americans"].start < 2.4
    assert 9.8 < words[-1].end < 11.0
    assert all(s.language == "en" for s in segments)


def test_faster_whisper_jfk(recognizer, jfk):
    check_jfk(recognizer.transcribe(jfk))


def test_phone_call_against_stm(recognizer, data_dir):
    audio = load_audio(data_dir / "pyannote_sample" / "sample.wav")
    segments = recognizer.transcribe(audio)
    reference = stm_text(data_dir / "pyannote_sample" / "sample.stm")
    assert wer(reference, " ".join(s.text for s in segments)) <= 0.30
    assert segments[0].start > 6.0  # nothing is said before 6.68 s: nothing transcribed there
    assert [s.id for s in segments] == [f"S{i}" for i in range(len(segments))]


def test_silence_gives_no_segments(recognizer):
    assert recognizer.transcribe(np.zeros(20 * SAMPLE_RATE, np.float32)) == []
    assert recognizer.transcribe(np.zeros(0, np.float32)) == []


def test_silence_around_speech_is_not_transcribed(recognizer, jfk):
    padded = np.concatenate([np.zeros(10 * SAMPLE_RATE, np.float32), jfk, np.zeros(10 * SAMPLE_RATE, np.float32)])
    segments = recognizer.transcribe(padded)
    assert wer(JFK, " ".join(s.text for s in segments)) <= 0.05
    assert segments[0].start > 10.0 and segments[-1].end < 21.0  # times are in the padded audio


@pytest.fixture(scope="module")
def openai_checkpoint(tmp_path_factory):
    return convert_ct2_to_openai_whisper(resolve_model("whisper-tiny.en"),
                                         tmp_path_factory.mktemp("openai") / "tiny.en.pt")


@pytest.mark.slow
def test_openai_whisper_backend_on_converted_checkpoint(openai_checkpoint, jfk):
    loaded = torch.load(openai_checkpoint, weights_only=True)  # no pickled code
    assert loaded["dims"]["n_text_layer"] == 4 and loaded["alignment_heads"][0] == [1, 0]
    recognizer = SpeechRecognizer(AsrConfig(backend="openai-whisper", model_path=str(openai_checkpoint)),
                                  vad=None)
    check_jfk(recognizer.transcribe(jfk))


def test_converter_splits_fused_attention(tmp_path):
    """The converted query/key/value are the rows of CTranslate2's fused matrix."""
    ct2 = resolve_model("whisper-tiny.en")
    _, variables = read_ct2_model(ct2 / "model.bin")
    checkpoint = torch.load(convert_ct2_to_openai_whisper(ct2, tmp_path / "t.pt"), weights_only=True)
    state = checkpoint["model_state_dict"]
    fused = variables["decoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    d = fused.shape[1]
    np.testing.assert_array_equal(state["decoder.blocks.1.attn.key.weight"].float().numpy(), fused[d: 2 * d])
    assert "decoder.blocks.1.attn.key.bias" not in state
    kv = variables["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(state["decoder.blocks.0.cross_attn.value.weight"].float().numpy(), kv[d:])


@pytest.mark.slow
def test_multilingual_base_detects_english(jfk):
    recognizer = SpeechRecognizer(AsrConfig(model="whisper-base"))
    assert recognizer.multilingual
    language, probability = recognizer.detect_language(jfk)
    assert language == "en" and probability > 0.8
    check_jfk(recognizer.transcribe(jfk))


def test_missing_models_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2 Whisper folder"):
        SpeechRecognizer(AsrConfig(model_path=str(tmp_path)))
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        SpeechRecognizer(AsrConfig(model="Someone/not-a-cached-model"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        SpeechRecognizer(AsrConfig(backend="openai-whisper", model_path=str(tmp_path / "x.pt")))


def test_video_without_audio_gives_no_speech(recognizer, tmp_path):
    import av

    video = tmp_path / "silent.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert recognizer.transcribe(load_audio(video)) == []


def test_joined_times_map_both_ends_of_a_word_through_one_region():
    from extractors.asr import _JoinedTimeline
    from extractors.vad import SpeechRegion

    audio = np.zeros(70 * SAMPLE_RATE, np.float32)
    timeline = _JoinedTimeline(audio, [SpeechRegion(1.0, 5.0), SpeechRegion(60.0, 62.0)], gap_s=0.3)
    assert [(r.start, r.end) for r in timeline.joined] == [(0.0, 4.0), (4.3, 6.3)]
    assert timeline.to_source(2.0, 2.5) == pytest.approx((3.0, 3.5))     # inside the first region
    assert timeline.to_source(5.0, 5.3) == pytest.approx((60.7, 61.0))   # inside the second region
    # A word that starts before the cut-out silence and ends after it: its middle (4.4) is in the
    # second region, so both ends are placed there (the old mapping gave 4.0 -> 61.0 s).
    assert timeline.to_source(3.9, 4.9) == pytest.approx((60.0, 60.6))
    assert timeline.to_source(4.05, 4.1) == pytest.approx((5.0, 5.0))    # in the gap: the nearer edge
    assert timeline.to_source(4.25, 4.28) == pytest.approx((60.0, 60.0))
    assert timeline.to_source(9.0, 9.5) == pytest.approx((62.0, 62.0))   # past the end


def test_words_are_kept_in_speech_and_segments_split_at_silence():
    from extractors.asr import _RawSegment, _RawWord, place_in_speech
    from extractors.vad import SpeechRegion

    regions = [SpeechRegion(0.0, 2.0), SpeechRegion(2.5, 4.0), SpeechRegion(30.0, 32.0)]
    raw = [_RawSegment(" Ask not, thank you. Ask what", 0.0, 31.0, [
        _RawWord(" Ask", 0.1, 1.2, 0.9),
        _RawWord(" not,", 1.8, 2.6, 0.9),     # straddles a short pause: clamped to the region of its middle
        _RawWord(" thank", 10.0, 10.5, 0.2),  # where nobody speaks: dropped
        _RawWord(" you.", 2.7, 12.0, 0.2),    # reaches far into the silence: cut at the region's end
        _RawWord(" Ask", 29.0, 30.4, 0.9),    # starts in the silence: starts where speech does
        _RawWord(" what", 30.4, 30.8, 0.9),
    ])]
    segments = place_in_speech(raw, regions, split_gap_s=1.0, language="en")
    assert [s.text for s in segments] == ["Ask not, you.", "Ask what"]  # split at the 26 s silence
    assert [s.id for s in segments] == ["S0", "S1"]
    words = [(w.text, w.start, w.end) for s in segments for w in s.words]
    assert words == [("Ask", 0.1, 1.2), ("not,", 1.8, 2.0), ("you.", 2.7, 4.0), ("Ask", 30.0, 30.4),
                     ("what", 30.4, 30.8)]
    assert (segments[0].start, segments[0].end, segments[1].start, segments[1].end) == (0.1, 4.0, 30.0, 30.8)
    assert place_in_speech(raw, None, split_gap_s=100.0, language="en")[0].words[2].text == "thank"


def jfk_with_silence(jfk: np.ndarray, seconds: float = 60.0) -> np.ndarray:
    """jfk.flac with `seconds` of silence inserted into the pause after "Americans" (2.27-3.27 s)."""
    cut = int(2.77 * SAMPLE_RATE)
    return np.concatenate([jfk[:cut], np.zeros(int(seconds * SAMPLE_RATE), np.float32), jfk[cut:]])


def check_inside_speech(segments, regions, pad_s: float, split_gap_s: float):
    """No word leaves the (padded) speech regions; no segment spans a silence over `split_gap_s`."""
    from extractors.asr import padded_regions

    allowed = padded_regions(regions, 1e9, pad_s)
    for segment in segments:
        for word in segment.words:
            assert any(r.start - 1e-6 <= word.start <= word.end <= r.end + 1e-6 for r in allowed), \
                (word, segment.text)
        for before, after in zip(segment.words, segment.words[1:], strict=False):
            assert after.start - before.end <= split_gap_s, (before, after, segment.text)
        silence = [(a.end, b.start) for a, b in zip(allowed, allowed[1:], strict=False)
                   if b.start - a.end > split_gap_s]
        assert not any(segment.start < start and end < segment.end for start, end in silence), segment


@pytest.mark.parametrize("backend, decode", [
    ("faster-whisper", "joined"),
    ("faster-whisper", "in_place"),
    pytest.param("openai-whisper", "joined", marks=pytest.mark.slow),
    pytest.param("openai-whisper", "in_place", marks=pytest.mark.slow),
])
def test_inserted_silence_keeps_words_and_segments_in_speech(jfk, request, backend, decode):
    """The old mapping gave "ask" 2.26-63.86 s and its segment 0.12-67.65 s (both backends)."""
    config = AsrConfig(backend=backend, decode=decode)
    checkpoint = request.getfixturevalue("openai_checkpoint") if backend == "openai-whisper" else None
    recognizer = SpeechRecognizer(config, model_path=checkpoint)
    audio = jfk_with_silence(jfk)
    regions = recognizer.vad.detect(audio)
    segments = recognizer.transcribe(audio, regions)
    check_inside_speech(segments, regions, config.region_pad_s, config.join_gap_s)
    text = " ".join(s.text for s in segments)
    assert wer(JFK, text) <= (0.0 if decode == "joined" else 0.1), text
    words = [w for s in segments for w in s.words]
    first_ask = next(w for w in words if normalize(w.text) == "ask")
    assert 62.9 < first_ask.start < first_ask.end < 64.1  # said at 63.27-63.84 s
    assert max(s.end for s in segments if s.start < 10.0) < 2.6  # the first segment ends before the silence


def test_device_and_model_path_reach_the_recognizer(tmp_path):
    """What the pipeline passes (configuration's device: and models:) is what the recogniser uses."""
    recognizer = SpeechRecognizer(AsrConfig(), vad=None, device="cpu",
                                  model_path=resolve_model("whisper-tiny.en"))
    assert recognizer.device == "cpu" and recognizer.config.model_path == str(resolve_model("whisper-tiny.en"))
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2 Whisper folder"):
        SpeechRecognizer(AsrConfig(), vad=None, device="cpu", model_path=tmp_path)  # overrides the config
    with pytest.raises(ExtractorError, match="unknown device"):
        SpeechRecognizer(AsrConfig(), vad=None, device="tpu")


RAVDESS_SENTENCES = {"01": "kids are talking by the door", "02": "dogs are sitting by the door"}


@pytest.mark.parametrize("name", [
    "Actor_20/03-01-07-02-01-01-20.flac",  # the old code appended a "." segment of its own here
    "Actor_01/03-01-02-01-02-02-01.flac",
])
def test_short_utterance_gives_only_what_was_said(recognizer, data_dir, name):
    audio = load_audio(data_dir / "ravdess_speech" / name)
    regions = recognizer.vad.detect(audio)
    segments = recognizer.transcribe(audio, regions)
    sentence = RAVDESS_SENTENCES[Path(name).name.split("-")[4]]
    assert len(segments) == 1, [s.text for s in segments]
    said = normalize(segments[0].text).split()
    assert set(said) <= set(sentence.split()) and len(said) <= len(sentence.split()), segments[0].text
    check_inside_speech(segments, regions, recognizer.config.region_pad_s, recognizer.config.join_gap_s)



def test_decode_windows_cut_long_audio_in_its_widest_late_silences():
    from extractors.asr import decode_windows
    from extractors.vad import SpeechRegion

    # speech every 10 s (5 s long), with one wider pause at 52-58 s
    regions = [SpeechRegion(t, t + 5.0) for t in (0, 10, 20, 30, 40, 47, 58, 68, 78, 88, 98, 108)]
    assert decode_windows(regions, 120.0, 300.0) == [(0, 12)]          # short audio: one window
    windows = decode_windows(regions, 120.0, 60.0)
    assert windows[0] == (0, 6)        # cut at the 6 s pause, not at the last region that fits (58-63 s)
    assert [i for w in windows for i in range(*w)] == list(range(12))  # every region once, in order
    for first, last in windows:
        assert regions[last - 1].end - regions[first].start <= 60.0
    long_region = [SpeechRegion(0, 500), SpeechRegion(501, 502)]
    assert decode_windows(long_region, 502.0, 300.0) == [(0, 1), (1, 2)]


@pytest.mark.parametrize("decode", ["joined", "in_place"])
def test_long_audio_decoded_in_windows_gives_the_same_words_at_the_same_times(jfk, decode):
    """Windows bound the decoder's memory (it computes the features of all it is given at once); each
    window's words come back at their own times in the file."""
    audio = np.concatenate([jfk, np.zeros(20 * SAMPLE_RATE, np.float32), jfk])     # JFK at 0 s and at 31 s
    whole = SpeechRecognizer(AsrConfig(decode=decode))
    regions = whole.vad.detect(audio)
    windowed = SpeechRecognizer(AsrConfig(decode=decode, window_s=20.0))
    from extractors.asr import decode_windows

    assert len(decode_windows(regions, len(audio) / SAMPLE_RATE, 20.0)) == 2
    decoded = []   # the length of audio each decoder call was given
    backend_transcribe = windowed._backend.transcribe
    windowed._backend.transcribe = lambda a, *rest: decoded.append(len(a) / SAMPLE_RATE) or backend_transcribe(a, *rest)
    one, two = whole.transcribe(audio, regions), windowed.transcribe(audio, regions)
    assert len(decoded) == 2 and max(decoded) < 12.0, decoded
    words_one = [(normalize(w.text), w.start, w.end) for s in one for w in s.words]
    words_two = [(normalize(w.text), w.start, w.end) for s in two for w in s.words]
    assert [w for w, _, _ in words_two] == [w for w, _, _ in words_one]
    # Each window holds one copy of the same speech at the same place, so the second copy's words are the
    # first's, 31 s later (measured within 0.03 s at the start, 0.09 s at the end). Decoded whole, the
    # second copy sits elsewhere in whisper's 30 s window and its first word's start moves by up to 0.5 s
    # on some CPUs: that is the whole decoding's looseness, so it is not the reference here.
    shift = (len(jfk) + 20 * SAMPLE_RATE) / SAMPLE_RATE
    half = len(words_two) // 2
    pairs = list(zip(words_two[:half], words_two[half:], strict=True))
    assert all(a[0] == b[0] for a, b in pairs)
    # Whisper's word times move by up to about 0.2 s with what else is in the window (0.212 s measured on
    # one CPU); a window placed at the wrong offset would move every word by seconds.
    assert max(abs(b[1] - a[1] - shift) for a, b in pairs) < 0.3
    assert max(abs(b[2] - a[2] - shift) for a, b in pairs) < 0.3
    check_inside_speech(two, regions, windowed.config.region_pad_s, windowed.config.join_gap_s)
    second_americans = [w for w in words_two if w[0] == "americans"][1]
    assert 31.0 + 1.2 < second_americans[1] < 31.0 + 2.4


def test_windows_cut_in_a_short_silence_decode_no_audio_twice(jfk):
    """Padding (0.2 s a side) would make two windows cut in a 0.2 s pause share 0.2 s of audio: the words
    there would come out twice. Each window's clips stop at the middle of the pause."""
    from extractors.asr import speech_clips
    from extractors.vad import SpeechRegion

    regions = [SpeechRegion(0.322, 2.27), SpeechRegion(3.266, 4.446), SpeechRegion(5.378, 6.4),
               SpeechRegion(6.6, 7.678), SpeechRegion(8.162, 10.622)]
    recognizer = SpeechRecognizer(AsrConfig(decode="in_place", window_s=7.0))   # the first cut: the 0.2 s pause
    decoded = []   # seconds of clips handed to the decoder, per call
    backend_transcribe = recognizer._backend.transcribe
    recognizer._backend.transcribe = lambda a, clips, *rest: (
        decoded.append(sum(c.end - c.start for c in clips)) or backend_transcribe(a, clips, *rest))
    from extractors.asr import decode_windows

    assert decode_windows(regions, len(jfk) / SAMPLE_RATE, 7.0)[0] == (0, 3)
    segments = recognizer.transcribe(jfk, regions)
    assert len(decoded) >= 2
    # the clips of one decode of the whole file cover each second once
    once = sum(c.end - c.start for c in speech_clips(regions, len(jfk) / SAMPLE_RATE, 0.2, 1.0))
    assert sum(decoded) <= once + 1e-3, (decoded, once)
    words = [normalize(w.text) for s in segments for w in s.words]
    assert wer(JFK, " ".join(words)) <= 0.25, words
