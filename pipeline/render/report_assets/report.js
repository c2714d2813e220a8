// The report page: draws one lane per character from the embedded timeline data, keeps a cursor on the
// player's time, seeks on click and explains a moment on hover. Every text from the data goes into the
// page through textContent, never as markup.
(function () {
  "use strict";

  const SVG_NS = "http://www.w3.org/2000/svg";
  const ROLE_H = 7;
  const GAP = 3;
  const data = JSON.parse(document.getElementById("timeline-data").textContent);
  const video = document.getElementById("video");
  const duration = Math.max(Number(data.video.duration) || 0, 0.001);
  const offset = Number(data.player.time_offset) || 0;
  const labels = data.labels;
  const labelH = Math.max(3, Math.min(8, Math.floor(56 / Math.max(labels.length, 1))));
  const laneH = ROLE_H + GAP + labels.length * labelH;

  const characters = data.characters.slice();
  const known = new Set(characters.map((c) => c.id));
  for (const entry of data.entries) {
    if (!known.has(entry.character)) {  // a lane even for a character the list lacks
      known.add(entry.character);
      characters.push({ id: entry.character, name: entry.character, screen_time: 0, speaking_time: 0 });
    }
  }
  const byId = new Map(characters.map((c) => [c.id, c]));
  const segments = data.segments.slice().sort((a, b) => a.start - b.start);
  const segmentById = new Map(segments.map((s) => [s.id, s]));
  const entriesOf = new Map(characters.map((c) => [c.id, []]));
  for (const entry of data.entries) entriesOf.get(entry.character).push(entry);
  for (const list of entriesOf.values()) list.sort((a, b) => a.start - b.start);

  const view = { start: 0, span: duration, zoom: 1 };
  let current = 0;
  let playing = false;

  const $ = (id) => document.getElementById(id);
  const timelineBox = $("timeline");
  const lanesBox = $("lanes");
  const axis = $("axis");
  const cursor = $("cursor");
  const tooltip = $("tooltip");
  const transcript = $("transcript");
  const lanes = [];

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  // m:ss.s (h:mm:ss.s past an hour); rounds first so 59.96 s reads 1:00.0, not 0:60.0.
  function clock(t, digits) {
    const d = digits === undefined ? 1 : digits;
    const scale = Math.pow(10, d);
    const sign = t < 0 ? "-" : "";
    t = Math.round(Math.abs(t) * scale) / scale;
    const h = Math.floor(t / 3600);
    const m = Math.floor((t % 3600) / 60);
    const parts = (t % 60).toFixed(d).split(".");
    const s = parts[0].padStart(2, "0") + (parts.length > 1 ? "." + parts[1] : "");
    return sign + (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + s;
  }

  function seconds(t) {
    return t >= 60 ? clock(t, 0) : t.toFixed(1) + " s";
  }

  function nameOf(id) {
    const character = byId.get(id);
    return character ? character.name : id;
  }

  // Finds the item of a start-sorted list whose [start, end) holds t.
  function covering(list, t) {
    let lo = 0;
    let hi = list.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (list[mid].start <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    for (let i = found; i >= 0 && i > found - 8; i--) {  // overlapping items: look a few back
      if (list[i].start <= t && t < list[i].end) return list[i];
    }
    return null;
  }

  function buildHeader() {
    const meta = [clock(duration) + " long", characters.length + " character" + (characters.length === 1 ? "" : "s"),
      segments.length + " transcript segment" + (segments.length === 1 ? "" : "s"), "labels: " + labels.join(", ")];
    if (data.thresholds) {
      meta.push("per-label thresholds (in the tooltips)");
    } else if (typeof data.threshold === "number") {
      meta.push("threshold " + data.threshold);
    }
    $("meta").textContent = meta.join(" · ");
    const foot = ["Drawn from " + data.timeline_file + " (the full data: faces, words, provenance)."];
    if (data.version) foot.push("ramer-timelines " + data.version + (data.created ? ", analysed " + data.created : "") + ".");
    $("footer").textContent = foot.join(" ");
  }

  function buildLegend() {
    const legend = $("legend");
    const item = (swatch, text) => {
      const node = el("span", { class: "item" });
      node.append(swatch, document.createTextNode(text));
      legend.append(node);
    };
    const swatch = (color, extra) => {
      const node = el("span", { class: "swatch" + (extra ? " " + extra : "") });
      if (color) node.style.background = color;
      return node;
    };
    item(swatch("var(--speaking)"), "speaking");
    item(swatch("var(--listening)"), "listening");
    legend.append(el("span", { class: "item note" }, "band rows, top to bottom:"));
    for (const label of labels) item(swatch(data.colors[label]), label);
    item(swatch(null, "turn"), "turn start");
    item(swatch(null, "playhead"), "playback position");
    const hint = el("span", { class: "item note" }, "solid: predicted label; faint: below its threshold, by probability · click a lane to seek · hover for the words");
    legend.append(hint);
  }

  function buildLanes() {
    for (const character of characters) {
      const row = el("div", { class: "row lane-row", "data-character": character.id });
      const head = el("div", { class: "head lane-head" });
      if (character.thumbnail) {
        head.append(el("img", { src: character.thumbnail, alt: character.name }));
      } else {
        head.append(el("div", { class: "face" }, (character.name || "?").slice(0, 2)));
      }
      const texts = el("div", { class: "texts" });
      const name = el("div", { class: "name", title: character.name + " (" + character.id + ")" }, character.name);
      texts.append(name);
      const screen = character.screen_time || 0;
      const speak = character.speaking_time || 0;
      texts.append(el("div", { class: "stats" },
        "on screen " + seconds(screen) + " · " + Math.round(100 * screen / duration) + "%"));
      texts.append(el("div", { class: "stats" },
        "speaking " + seconds(speak) + " · " + Math.round(100 * speak / duration) + "%"));
      const bar = el("div", { class: "bar", title: "on screen / speaking, share of the video" });
      const screenBar = el("span", { class: "screen" });
      screenBar.style.width = Math.min(100, 100 * screen / duration) + "%";
      const speakBar = el("span", { class: "speak" });
      speakBar.style.width = Math.min(100, 100 * speak / duration) + "%";
      bar.append(screenBar, speakBar);
      texts.append(bar);
      head.append(texts);
      const lane = svg("svg", { class: "lane", height: laneH, "data-character": character.id,
        role: "img", "aria-label": "emotion lane of " + character.name });
      lane.addEventListener("click", (event) => seek(timeAt(lane, event.clientX)));
      lane.addEventListener("mousemove", (event) => explain(character.id, timeAt(lane, event.clientX), event));
      lane.addEventListener("mouseleave", () => { tooltip.hidden = true; });
      row.append(head, lane);
      lanesBox.append(row);
      lanes.push({ id: character.id, node: lane });
    }
  }

  function buildTranscript() {
    for (const segment of segments) {
      const item = el("li", { "data-segment": segment.id });
      item.append(el("span", { class: "t" }, clock(segment.start)));
      item.append(el("span", { class: "who" }, (segment.character ? nameOf(segment.character) : "(off screen)") + ":"));
      item.append(document.createTextNode(segment.text));
      item.addEventListener("click", () => seek(segment.start + 1e-3));
      transcript.append(item);
      segment.item = item;
    }
    if (!segments.length) transcript.append(el("li", { class: "note" }, "No speech was transcribed."));
  }

  function timeAt(node, clientX) {
    const box = node.getBoundingClientRect();
    return view.start + Math.min(Math.max((clientX - box.left) / Math.max(box.width, 1), 0), 1) * view.span;
  }

  function drawAxis(width) {
    axis.replaceChildren();
    const perSecond = width / view.span;
    const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
    const step = steps.find((s) => s * perSecond >= 70) || 7200;
    const digits = step < 1 ? 1 : 0;
    for (let t = Math.ceil(view.start / step) * step; t <= view.start + view.span + 1e-9; t += step) {
      const x = (t - view.start) * perSecond;
      axis.append(svg("line", { x1: x, x2: x, y1: 16, y2: 22 }));
      const label = svg("text", { x: Math.min(Math.max(x, 14), width - 14), y: 12, "text-anchor": "middle" });
      label.textContent = clock(t, digits);
      axis.append(label);
    }
  }

  function drawLane(lane, width) {
    const perSecond = width / view.span;
    const end = view.start + view.span;
    const x = (t) => (t - view.start) * perSecond;
    const node = lane.node;
    node.replaceChildren();
    const visible = entriesOf.get(lane.id).filter((e) => e.end > view.start && e.start < end);
    for (const entry of visible) {
      if (entry.role !== "speaker") continue;
      node.append(svg("rect", { class: "speaking-bg", x: x(entry.start), y: 0,
        width: Math.max(x(entry.end) - x(entry.start), 1), height: laneH }));
    }
    for (const entry of visible) {
      const left = x(entry.start);
      const w = Math.max(x(entry.end) - left, 0.75);
      const role = svg("rect", { class: "seg role-" + entry.role, x: left, y: 0, width: w, height: ROLE_H,
        "data-start": entry.start, "data-end": entry.end });
      node.append(role);
      entry.probs.forEach((p, i) => {
        const on = entry.labels.includes(labels[i]);
        if (p < 0.02 && !on) return;
        // solid where the label is predicted (over its threshold), faint by probability elsewhere
        const opacity = on ? 0.55 + 0.45 * Math.min(p, 1) : 0.5 * Math.min(p, 1);
        node.append(svg("rect", { class: "band" + (on ? " on" : ""), x: left, y: ROLE_H + GAP + i * labelH,
          width: w, height: labelH - (labelH > 3 ? 0.5 : 0), fill: data.colors[labels[i]], "fill-opacity": opacity }));
      });
    }
    // Turn starts: full-height lines while they are far enough apart to read, else ticks over the role
    // strip only (a 22-minute episode has hundreds of turns: full lines would grey the whole lane).
    const shown = segments.filter((segment) => segment.start >= view.start && segment.start <= end);
    const full = shown.length === 0 || width / shown.length >= 12;
    let previous = -Infinity;
    for (const segment of shown) {
      const at = x(segment.start);
      if (at - previous < 2) continue;
      previous = at;
      node.append(svg("line", { class: "turn" + (segment.character === lane.id ? " own" : ""),
        x1: at, x2: at, y1: 0, y2: full ? laneH : ROLE_H + GAP }));
    }
  }

  function render() {
    const width = Math.max(lanes.length ? lanes[0].node.getBoundingClientRect().width
      : axis.getBoundingClientRect().width, 10);
    axis.setAttribute("width", width);
    drawAxis(width);
    for (const lane of lanes) {
      lane.node.setAttribute("width", width);
      drawLane(lane, width);
    }
    const pan = $("pan");
    pan.max = String(Math.max(duration - view.span, 0));
    pan.value = String(view.start);
    pan.disabled = view.zoom <= 1;
    placeCursor();
  }

  function placeCursor() {
    const reference = lanes.length ? lanes[0].node : axis;
    const box = reference.getBoundingClientRect();
    const outer = timelineBox.getBoundingClientRect();
    const x = (current - view.start) / view.span * box.width;
    cursor.hidden = x < 0 || x > box.width + 0.5;
    cursor.style.left = (box.left - outer.left + x) + "px";
    cursor.dataset.time = current.toFixed(3);
    $("clock").textContent = clock(current);
  }

  function follow() {
    if (view.zoom > 1 && (current < view.start || current > view.start + view.span)) {
      view.start = Math.min(Math.max(current - view.span * 0.1, 0), Math.max(duration - view.span, 0));
      render();
    }
  }

  let lastSegment;
  function showNow() {
    const segment = covering(segments, current);
    if (segment === lastSegment) return;
    lastSegment = segment;
    const now = $("now");
    now.replaceChildren();
    for (const item of transcript.querySelectorAll("li.current")) item.classList.remove("current");
    if (!segment) {
      now.append(el("span", { class: "idle" }, "Nobody is speaking."));
      return;
    }
    now.append(el("span", { class: "who" }, (segment.character ? nameOf(segment.character) : "(off screen)") + ": "));
    now.append(document.createTextNode(segment.text));
    if (segment.item) {
      segment.item.classList.add("current");
      const top = segment.item.offsetTop;
      if (top < transcript.scrollTop || top + segment.item.offsetHeight > transcript.scrollTop + transcript.clientHeight) {
        transcript.scrollTop = top - transcript.clientHeight / 3;
      }
    }
  }

  function update(t) {
    current = Math.min(Math.max(t, 0), duration);
    follow();
    placeCursor();
    showNow();
  }

  function seek(t) {
    t = Math.min(Math.max(t, 0), duration);
    if (video) {
      try {
        video.currentTime = t + offset;
      } catch (error) {
        // a player without media keeps its time; the lanes still follow the click
      }
    }
    update(t);
  }

  function explain(id, t, event) {
    const entry = covering(entriesOf.get(id), t);
    const segment = entry && entry.segment ? segmentById.get(entry.segment) : covering(segments, t);
    tooltip.replaceChildren();
    if (entry) {
      tooltip.append(el("div", { class: "tt-head" }, nameOf(id) + " · " + (entry.role === "speaker" ? "speaking" : "listening")));
      tooltip.append(el("div", { class: "tt-sub" }, clock(entry.start, 2) + " – " + clock(entry.end, 2) +
        (entry.modalities.length ? " · from " + entry.modalities.join(", ") : "")));
    } else {
      tooltip.append(el("div", { class: "tt-head" }, nameOf(id)));
      tooltip.append(el("div", { class: "tt-sub" }, "no estimate at " + clock(t, 2)));
    }
    if (segment) {
      const who = segment.character ? nameOf(segment.character) : "someone off screen";
      const conf = typeof segment.confidence === "number" ? " (confidence " + segment.confidence.toFixed(2) + ")" : "";
      tooltip.append(el("div", { class: "tt-sub" }, (segment.character === id ? "says" : who + " says") + conf + ":"));
      tooltip.append(el("div", { class: "tt-text" }, "“" + segment.text + "”"));
    }
    if (entry) {
      const table = el("table");
      const order = labels.map((label, i) => [label, entry.probs[i]]).sort((a, b) => b[1] - a[1]);
      for (const [label, p] of order) {
        const row = el("tr", entry.labels.includes(label) ? { class: "on" } : {});
        row.append(el("td", {}, (entry.labels.includes(label) ? "✓ " : "") + label));
        row.append(el("td", {}, p.toFixed(2)));
        const limit = data.thresholds && typeof data.thresholds[label] === "number" ? data.thresholds[label] : data.threshold;
        row.append(el("td", { class: "limit" }, typeof limit === "number" ? "≥ " + limit.toFixed(2) : ""));
        const cell = el("td", { class: "bar" });
        const fill = el("span");
        fill.style.width = Math.round(100 * Math.min(p, 1)) + "%";
        fill.style.background = data.colors[label];
        cell.append(fill);
        row.append(cell);
        table.append(row);
      }
      tooltip.append(table);
    }
    tooltip.hidden = false;
    const pad = 14;
    const w = tooltip.offsetWidth;
    const h = tooltip.offsetHeight;
    let left = event.clientX + pad;
    let top = event.clientY + pad;
    if (left + w > window.innerWidth - 4) left = Math.max(event.clientX - pad - w, 4);
    if (top + h > window.innerHeight - 4) top = Math.max(event.clientY - pad - h, 4);
    tooltip.style.left = left + "px";
    tooltip.style.top = top + "px";
  }

  function tick() {
    if (!playing) return;
    update(video.currentTime - offset);
    requestAnimationFrame(tick);
  }

  function bind() {
    $("zoom").addEventListener("change", (event) => {
      view.zoom = Number(event.target.value) || 1;
      view.span = duration / view.zoom;
      view.start = Math.min(Math.max(current - view.span / 2, 0), Math.max(duration - view.span, 0));
      render();
    });
    $("pan").addEventListener("input", (event) => {
      view.start = Number(event.target.value) || 0;
      render();
    });
    let pending = false;
    window.addEventListener("resize", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; render(); });
    });
    if (!video) return;
    for (const name of ["timeupdate", "seeked", "seeking", "loadedmetadata"]) {
      video.addEventListener(name, () => update(video.currentTime - offset));
    }
    video.addEventListener("play", () => { playing = true; requestAnimationFrame(tick); });
    video.addEventListener("pause", () => { playing = false; });
    video.addEventListener("ended", () => { playing = false; });
    video.addEventListener("error", () => {
      $("player-note").textContent = "This browser could not play the video (" + data.player.note +
        "). The lanes below still work.";
    });
  }

  if (!video) document.body.classList.add("no-player");
  buildHeader();
  buildLegend();
  buildLanes();
  buildTranscript();
  bind();
  render();
  update(0);
  document.body.dataset.ready = "true";
})();
