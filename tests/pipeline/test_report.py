"""The HTML report: one self-contained file, checked in a real headless Chromium (Debian's, via Playwright).

The browser checks open the file from disk with every request that is not file:/data:/blob: refused and
counted, so "no network at view time" is tested, not assumed; a control page proves the guard catches a
request. One module fixture runs the pipeline on the first 8.6 s of samples/two_people.mp4 (two speakers,
two turns) for the real-timeline checks; the rest use hand-made timelines, which are quick.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import UserError
from pipeline.render.report import _script_json, label_colors, write_report

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE = REPO_ROOT / "samples" / "two_people.mp4"
SAMPLE_SECONDS = 17.48
DOCS_IMAGE = REPO_ROOT / "docs" / "images" / "report.png"
UPDATE_DOCS = os.environ.get("RAMER_UPDATE_DOCS_IMAGES") == "1"  # rewrite DOCS_IMAGE from the real-timeline test
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NO_CHROMIUM = "install Debian's chromium (apt-get install chromium) or run ./setup.sh as root"
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
TRICKY_NAME = '<b>&"x"'
TRICKY_TEXT = "a < b && c > d </script><img src=x onerror=alert(1)> 'quoted' \"too\""


def handmade_timeline(duration: float = SAMPLE_SECONDS, characters: int = 3, turn: float = 3.0,
                      names: list[str | None] | None = None) -> dict:
    """A timeline shaped like ``pipeline run``'s: turns of ``turn`` seconds going round the characters,
    each heard by the others; joy rising over the video so the probabilities differ from entry to entry."""
    ids = [f"C{i}" for i in range(characters)]
    names = names if names is not None else [TRICKY_NAME, "Zoë & 'Bob' </script>", None][:characters]
    segments, entries = [], []
    start, index = 0.5, 0
    while start + turn <= duration:
        speaker = ids[index % characters]
        segment = {"id": f"S{index}", "start": round(start, 3), "end": round(start + turn - 0.4, 3),
                   "character": speaker, "speaker_confidence": 0.9, "voice": f"SPK{index % characters}",
                   "text": f"line {index}: " + (TRICKY_TEXT if index == 1 else f"turn {index} of {speaker}"),
                   "words": []}
        segments.append(segment)
        for character in ids:
            joy = round(min(0.95, 0.1 + 0.8 * start / duration), 4)
            probs = dict.fromkeys(LABELS, 0.05) | {"joy": joy, "neutral": round(1 - joy, 4)}
            entries.append({"character": character, "start": segment["start"], "end": segment["end"],
                            "moment": f"M{index}", "segment": segment["id"],
                            "role": "speaker" if character == speaker else "listener",
                            "modalities": ["text", "visual", "acoustic"] if character == speaker else ["visual"],
                            "untrained_modalities": [], "probs": probs,
                            "labels": [label for label, p in probs.items() if p >= 0.5]})
        start += turn
        index += 1
    return {
        "schema_version": 1,
        "video": {"path": f"clips/{TRICKY_NAME}.mp4", "sha256": "0" * 64, "duration": duration, "fps": 25.0,
                  "width": 640, "height": 360, "has_audio": True, "start_offset": 0.0},
        "model": {"checkpoint": "handmade", "labels": LABELS, "threshold": 0.5, "thresholds": None,
                  "trained_modalities": ["text", "visual", "acoustic"], "card": {}},
        "characters": [{"id": c, "name": n, "tracks": [], "screen_time": duration * 0.8,
                        "speaking_time": duration / characters * 0.7, "thumbnail": None, "embedding": None}
                       for c, n in zip(ids, names, strict=True)],
        "faces": {"analysis_fps": 4.0, "embedder": "none", "expression_labels": [], "shots": [], "tracks": []},
        "segments": segments,
        "timeline": entries,
        "provenance": {"package_version": "0.0.test", "created": "2026-01-01T00:00:00+00:00", "config": {},
                       "models": {}, "device": "cpu", "stages": {}, "warnings": []},
    }


def with_thumbnail(timeline: dict, folder: Path) -> dict:
    """Gives the first character a face crop file beside the timeline, as ``pipeline run`` does."""
    from PIL import Image

    (folder / "thumbnails").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (200, 240), (200, 120, 90)).save(folder / "thumbnails" / "C0.jpg")
    timeline["characters"][0]["thumbnail"] = {"t": 1.0, "box": [0, 0, 200, 240], "file": "thumbnails/C0.jpg"}
    return timeline


def report(tmp_path: Path, timeline: dict, video: Path | None = SAMPLE, **options) -> Path:
    timeline_path = tmp_path / "timeline.json"
    timeline_path.write_text(json.dumps(timeline), encoding="utf-8")
    return write_report(timeline, timeline_path, tmp_path / "render", video, **options)


# ---- the file itself ---------------------------------------------------------------------------------------

def test_label_colours_are_the_shared_ones(tmp_path):
    from pipeline.render.colors import emotion_color

    labels = LABELS + ["calm"]
    assert label_colors(labels) == {label: emotion_color(label, i) for i, label in enumerate(labels)}
    timeline = handmade_timeline()
    timeline["model"]["labels"] = labels
    page = report(tmp_path, timeline).read_text(encoding="utf-8")
    data = json.loads(page.split('id="timeline-data">', 1)[1].split("</script>", 1)[0])
    assert data["colors"] == label_colors(labels)


def test_embedded_json_cannot_end_its_script_element():
    text = _script_json({"name": "</script><!-- & -->", "more": "</SCRIPT>"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><!-- & -->", "more": "</SCRIPT>"}


def test_names_and_transcripts_are_escaped(tmp_path):
    page = report(tmp_path, handmade_timeline()).read_text(encoding="utf-8")
    assert TRICKY_NAME not in page and "<b>" not in page
    assert TRICKY_TEXT not in page and "<img src=x" not in page
    assert "&lt;b&gt;&amp;&quot;x&quot;" in page  # the title, from the video's file name
    assert page.lower().count("<script") == 2 and page.lower().count("</script") == 2
    data = page.split('id="timeline-data">', 1)[1].split("</script>", 1)[0]
    assert json.loads(data)["characters"][0]["name"] == TRICKY_NAME


def test_the_file_loads_nothing_from_a_network(tmp_path):
    page = report(tmp_path, with_thumbnail(handmade_timeline(), tmp_path)).read_text(encoding="utf-8")
    assert set(re.findall(r"https?://[^\s\"'<>)]+", page)) <= {"http://www.w3.org/2000/svg"}  # a namespace name
    assert not re.search(r"<link\b|@import|url\(", page, re.IGNORECASE)
    sources = re.findall(r"\bsrc=\"([^\"]*)\"", page)
    assert sources and all(s.startswith("data:video/mp4;base64,") for s in sources)
    assert "default-src 'none'" in page  # and the page forbids loading anything it does not name


def test_the_player_prefers_the_overlay_embeds_small_files_links_large_ones(tmp_path):
    timeline = handmade_timeline()
    embedded = report(tmp_path, timeline).read_text(encoding="utf-8")
    assert 'src="data:video/mp4;base64,' in embedded and "the source video" in embedded
    linked = report(tmp_path, timeline, embed_limit=1000).read_text(encoding="utf-8")
    relative = os.path.relpath(SAMPLE, tmp_path / "render")
    assert f'src="{relative}"' in linked and "too large to embed" in linked and "base64" not in linked
    none = report(tmp_path, timeline, video=None).read_text(encoding="utf-8")
    assert "<video" not in none and "No video given" in none
    shutil.copy(SAMPLE, tmp_path / "render" / "overlay.mp4")
    overlay = report(tmp_path, timeline, video=None).read_text(encoding="utf-8")
    assert "the overlay video" in overlay and 'src="data:video/mp4;base64,' in overlay


def test_the_report_is_written_atomically_and_an_unwritable_folder_is_a_user_error(tmp_path):
    path = report(tmp_path, handmade_timeline())
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write the report"):
        write_report(handmade_timeline(), tmp_path / "timeline.json", blocker, None)


# ---- in the browser ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Visit:
    """A page opened from disk with everything that would make it less than self-contained recorded."""

    def __init__(self, browser, path: Path, width: int = 1280, height: int = 900, ready: bool = True):
        self.problems: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"failed request: {r.url[:80]}"))
        self.page.on("request", self._request)
        self.page.on("dialog", self._dialog)
        self.page.goto(path.as_uri())
        if ready:
            self.page.wait_for_selector("body[data-ready='true']", timeout=15_000)

    def _local(self, url: str) -> bool:
        return url.startswith(("file:", "data:", "blob:"))

    def _route(self, route) -> None:
        if self._local(route.request.url):
            route.continue_()
        else:
            self.problems.append(f"network: {route.request.url}")
            route.abort()

    def _request(self, request) -> None:
        if not self._local(request.url):
            self.problems.append(f"request: {request.url}")

    def _dialog(self, dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    def lane_box(self, index: int) -> dict:
        """The lane's box in viewport coordinates, scrolled into view first (the mouse acts in the viewport)."""
        lane = self.page.locator("svg.lane").nth(index)
        lane.scroll_into_view_if_needed()
        return lane.bounding_box()

    def click_lane(self, index: int, fraction: float) -> float:
        box = self.lane_box(index)
        x = box["x"] + fraction * box["width"]
        self.page.mouse.click(x, box["y"] + box["height"] / 2)
        return x

    def hover_lane(self, index: int, fraction: float) -> str:
        box = self.lane_box(index)
        self.page.mouse.move(box["x"] + fraction * box["width"], box["y"] + box["height"] / 2)
        self.page.wait_for_selector("#tooltip:not([hidden])", timeout=5_000)
        return self.page.inner_text("#tooltip")

    def cursor_x(self) -> float:
        box = self.page.locator("#cursor").bounding_box()
        return box["x"] + box["width"] / 2

    def wait_for_video(self) -> float:
        """Waits until the player knows its duration (metadata loaded); returns it."""
        self.wait_until("document.getElementById('video').readyState >= 1", 15)
        return self.page.evaluate("document.getElementById('video').duration")

    def video_time(self) -> float:
        self.wait_until("!document.getElementById('video').seeking", 10)
        return self.page.evaluate("document.getElementById('video').currentTime")

    def wait_until(self, expression: str, seconds: float) -> None:
        """Polls ``expression`` (Playwright's wait_for_function evaluates strings, which the page's CSP forbids)."""
        deadline = time.monotonic() + seconds
        while not self.page.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {seconds} s: {expression}")
            self.page.wait_for_timeout(50)

    def close(self) -> None:
        self.context.close()


def check_seek(visit: Visit, lane: int, fraction: float, duration: float) -> None:
    """A click at ``fraction`` of a lane puts the player and the cursor there."""
    x = visit.click_lane(lane, fraction)
    assert visit.video_time() == pytest.approx(fraction * duration, abs=0.02 * duration)
    assert visit.cursor_x() == pytest.approx(x, abs=2)


def test_the_network_guard_catches_a_request(browser, tmp_path):
    control = tmp_path / "control.html"
    control.write_text('<!DOCTYPE html><img src="http://192.0.2.1/pixel.png"><p>control</p>', encoding="utf-8")
    visit = Visit(browser, control, ready=False)
    visit.page.wait_for_timeout(300)
    assert any("192.0.2.1" in problem for problem in visit.problems)
    visit.close()


def test_handmade_report_in_the_browser(browser, tmp_path):
    timeline = with_thumbnail(handmade_timeline(), tmp_path)
    visit = Visit(browser, report(tmp_path, timeline))
    page = visit.page
    duration = visit.wait_for_video()
    assert duration == pytest.approx(SAMPLE_SECONDS, abs=0.1)
    assert page.locator("svg.lane").count() == 3
    assert page.locator("svg.lane rect.seg").count() == len(timeline["timeline"])
    assert page.locator("svg.lane rect.band.on").count() > 0
    names = page.locator(".lane-head .name").all_inner_texts()
    assert names == [TRICKY_NAME, "Zoë & 'Bob' </script>", "C2"]
    assert page.locator("#timeline b, #transcript img, #tooltip img").count() == 0
    assert page.locator(".lane-head img").first.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert page.title() == f"Emotion timeline: {TRICKY_NAME}.mp4"
    check_seek(visit, 1, 0.25, duration)
    check_seek(visit, 0, 0.8, duration)
    # hover the middle of segment S1 (C1 speaking): its words, unescaped, and the probabilities
    segment = timeline["segments"][1]
    text = visit.hover_lane(1, (segment["start"] + segment["end"]) / 2 / SAMPLE_SECONDS)
    assert TRICKY_TEXT in text and "speaking" in text and "joy" in text
    assert "says" in visit.hover_lane(0, (segment["start"] + segment["end"]) / 2 / SAMPLE_SECONDS)
    # playback moves the cursor
    before = visit.cursor_x()
    page.evaluate("document.getElementById('video').muted = true; document.getElementById('video').play()")
    visit.wait_until("document.getElementById('video').currentTime > 14.6", 10)
    page.evaluate("document.getElementById('video').pause()")
    assert visit.cursor_x() > before + 20
    assert visit.problems == []
    visit.close()


def test_a_linked_video_plays_from_beside_the_report(browser, tmp_path):
    visit = Visit(browser, report(tmp_path, handmade_timeline(), embed_limit=1000))
    duration = visit.wait_for_video()
    check_seek(visit, 2, 0.5, duration)
    assert "too large to embed" in visit.page.inner_text("#player-note")
    assert visit.problems == []
    visit.close()


def test_a_video_that_starts_late_is_seeked_in_its_own_time(browser, tmp_path):
    """Timeline times start at the first frame; the player counts container time (first frame at pts 2 s)."""
    import av

    clip = tmp_path / "late.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(100):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = 50 + i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    timeline = handmade_timeline(4.0, characters=2, turn=1.0)
    timeline["video"]["start_offset"] = 2.0
    visit = Visit(browser, report(tmp_path, timeline, video=clip))
    visit.wait_for_video()
    visit.click_lane(0, 0.25)
    assert visit.video_time() == pytest.approx(2.0 + 1.0, abs=0.05)
    assert visit.page.inner_text("#clock") == "0:01.0"
    assert visit.problems == []
    visit.close()


def test_without_a_video_the_lanes_still_work(browser, tmp_path):
    visit = Visit(browser, report(tmp_path, handmade_timeline(), video=None))
    assert visit.page.locator("video").count() == 0
    x = visit.click_lane(0, 0.5)
    assert float(visit.page.get_attribute("#cursor", "data-time")) == pytest.approx(SAMPLE_SECONDS / 2, abs=0.1)
    assert visit.cursor_x() == pytest.approx(x, abs=2)
    assert "line" in visit.hover_lane(2, 0.5)
    assert visit.problems == []
    visit.close()


def test_a_22_minute_episode_fits_the_width_and_zooms(browser, tmp_path):
    duration = 22 * 60.0
    timeline = handmade_timeline(duration, characters=5, turn=2.5, names=["Ann", "Ben", "Cleo", "Dev", "Eve"])
    visit = Visit(browser, report(tmp_path, timeline, video=None), width=1280)
    page = visit.page
    assert page.locator("svg.lane").count() == 5
    assert page.locator("svg.lane rect.seg").count() == len(timeline["timeline"]) > 2500
    lane = visit.lane_box(0)
    assert lane["x"] + lane["width"] <= 1280 and lane["width"] > 900
    ticks = page.locator("#axis text").all_text_contents()
    assert 5 <= len(ticks) <= 20 and ticks[1] == "2:00"
    page.select_option("#zoom", "16")
    assert page.locator("svg.lane rect.seg").count() < len(timeline["timeline"]) / 8
    x = visit.click_lane(3, 0.5)
    start = float(page.input_value("#pan"))
    assert float(page.get_attribute("#cursor", "data-time")) == pytest.approx(start + duration / 32, abs=1)
    assert visit.cursor_x() == pytest.approx(x, abs=2)
    assert visit.problems == []
    visit.close()


# ---- on a real timeline --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_report(runner, tmp_path_factory):
    """``pipeline run`` on the first 8.6 s of the sample (two turns, two characters), then the report."""
    import av_clips

    from extractors.audio import SAMPLE_RATE, load_audio
    from extractors.media import iter_frames
    from pipeline.timeline import read_timeline

    folder = tmp_path_factory.mktemp("report_real")
    if UPDATE_DOCS:  # the README's picture shows the whole sample (four turns, a close-up); ~1 min more
        clip = SAMPLE
    else:
        clip = folder / "two_turns.mp4"
        frames = [frame.image for frame in iter_frames(SAMPLE, None) if frame.t < 8.6]
        av_clips.write_clip(clip, frames, load_audio(SAMPLE)[: int(8.6 * SAMPLE_RATE)])
    result = runner.run(clip, folder / "run")
    timeline_path = result.timeline_path
    timeline = read_timeline(timeline_path)
    return write_report(timeline, timeline_path, folder / "render", clip), timeline


def test_real_timeline_report_in_the_browser(browser, real_report, tmp_path):
    path, timeline = real_report
    visit = Visit(browser, path, width=1280, height=960)
    page = visit.page
    duration = visit.wait_for_video()
    characters = timeline["characters"]
    assert len(characters) >= 2
    assert page.locator("svg.lane").count() == len(characters)
    assert page.locator("svg.lane rect.seg").count() == len(timeline["timeline"])
    with_face = [c for c in characters if c["thumbnail"] and c["thumbnail"]["file"]]
    assert page.locator(".lane-head img").count() == len(with_face) >= 1
    check_seek(visit, 0, 0.3, duration)
    spoken = [s for s in timeline["segments"] if s["character"] and s["text"].strip()]
    assert spoken, "the sample's first two turns should be transcribed"
    segment = spoken[-1]
    lane = [c["id"] for c in characters].index(segment["character"])
    middle = (segment["start"] + segment["end"]) / 2 / timeline["video"]["duration"]
    visit.click_lane(lane, middle)
    assert segment["text"].strip() in visit.hover_lane(lane, middle)
    assert segment["text"].strip() in page.inner_text("#now")
    assert visit.problems == []
    shot = tmp_path / "report.png"
    png = screenshot_png(page)
    shot.write_bytes(png)
    assert 20_000 < len(png) < 400_000
    if UPDATE_DOCS:
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        DOCS_IMAGE.write_bytes(png)
    visit.close()


def screenshot_png(page) -> bytes:
    """The whole page as a 256-colour PNG (small enough for the README)."""
    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    buffer = io.BytesIO()
    image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
