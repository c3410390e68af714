// Freshet console, the timeline of one video stream: its stored fragments over the last
// 24 hours by server time (POST /listFragments, every page), drawn as bars with the
// gaps between them; a click plays from that moment (LIVE_REPLAY through the player of
// console.js), and a form exports a time range as an MP4 file (POST /getClip). Plain
// script, no build step; served from assets/ (src/api/console.rs).
//
// For automated tests the page keeps what it shows on `window.freshetTimeline`:
// `stream`, `fragments` (how many are drawn), `from`/`to` (the drawn range, ms),
// `clicked` (the time a click asked to play from, ms), `clip` (`bytes`, `filename` of
// the last export, or `error`).
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const panel = $('#timeline-panel');
  const title = $('#timeline-title');
  const status = $('#timeline-status');
  const canvas = $('#timeline');
  const fromLabel = $('#timeline-from');
  const toLabel = $('#timeline-to');
  const form = $('#clip-form');
  const clipStatus = $('#clip-status');
  const WINDOW_MS = 24 * 3600 * 1000;
  const MAX_PAGES = 20;

  const state = { stream: null, fragments: 0, from: null, to: null, clicked: null, clip: null, spans: [] };
  window.freshetTimeline = state;
  // Bumped per stream opened, so that late answers for another stream are dropped.
  let generation = 0;

  const { show } = window.freshetConsoleApi;

  async function listFragments(name, fromMs, toMs) {
    const { api } = window.freshetConsoleApi;
    const spans = [];
    let token;
    for (let page = 0; page < MAX_PAGES; page++) {
      const body = token ? { StreamName: name, NextToken: token, MaxResults: 1000 } : {
        StreamName: name,
        MaxResults: 1000,
        FragmentSelector: {
          FragmentSelectorType: 'SERVER_TIMESTAMP',
          TimestampRange: { StartTimestamp: fromMs / 1000, EndTimestamp: toMs / 1000 },
        },
      };
      const doc = await api('listFragments', body);
      for (const f of doc.Fragments || []) {
        const start = Number(f.ServerTimestamp) * 1000;
        spans.push({ start, end: start + Number(f.FragmentLengthInMilliseconds || 0) });
      }
      token = doc.NextToken;
      if (!token) return { spans, complete: true };
    }
    return { spans, complete: false };
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, w, h);
    if (!state.spans.length) return;
    const span = Math.max(1, state.to - state.from);
    const x = (t) => ((t - state.from) / span) * w;
    ctx.fillStyle = '#2563eb';
    for (const s of state.spans) {
      const x0 = x(s.start);
      ctx.fillRect(x0, h * 0.2, Math.max(1, x(s.end) - x0), h * 0.6);
    }
    if (state.clicked !== null) {
      ctx.fillStyle = '#dc2626';
      ctx.fillRect(x(state.clicked) - ratio, 0, 2 * ratio, h);
    }
    canvas.dataset.fragments = String(state.fragments);
  }

  async function open(name) {
    const mine = ++generation;
    const { localInputValue } = window.freshetConsoleApi;
    panel.hidden = false;
    title.textContent = `Timeline · ${name}`;
    Object.assign(state, { stream: name, fragments: 0, from: null, to: null, clicked: null, clip: null, spans: [] });
    show(status, 'Listing fragments…');
    show(clipStatus, '');
    draw();
    const now = Date.now();
    let listed;
    try {
      listed = await listFragments(name, now - WINDOW_MS, now + 60 * 1000);
    } catch (e) {
      if (mine === generation) show(status, `Cannot list the fragments of ${name}: ${e.message}`, true);
      return;
    }
    if (mine !== generation) return;
    const spans = listed.spans.sort((a, b) => a.start - b.start);
    state.spans = spans;
    state.fragments = spans.length;
    if (!spans.length) {
      show(status, `Nothing stored for ${name} in the last 24 hours.`);
      draw();
      return;
    }
    state.from = spans[0].start;
    state.to = Math.max(...spans.map((s) => s.end));
    fromLabel.textContent = new Date(state.from).toLocaleString();
    toLabel.textContent = new Date(state.to).toLocaleString();
    const gaps = spans.filter((s, i) => i > 0 && s.start - spans[i - 1].end > 1000).length;
    show(status, `${spans.length} fragment${spans.length === 1 ? '' : 's'}` +
      (gaps ? `, ${gaps} gap${gaps === 1 ? '' : 's'}` : '') +
      (listed.complete ? '' : ` (the first ${spans.length} only)`) + '. Click to play from there.');
    form.elements.start.value = localInputValue(Math.floor(state.from / 1000) * 1000);
    form.elements.end.value = localInputValue(Math.ceil(state.to / 1000) * 1000);
    draw();
  }

  canvas.addEventListener('click', (ev) => {
    if (!state.stream || state.from === null) return;
    const rect = canvas.getBoundingClientRect();
    const t = state.from + ((ev.clientX - rect.left) / rect.width) * (state.to - state.from);
    state.clicked = Math.round(t);
    draw();
    window.freshetConsoleApi.playFrom(state.stream, state.clicked, null);
  });

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const { inputMs } = window.freshetConsoleApi;
    const start = inputMs(form.elements.start.value);
    const end = inputMs(form.elements.end.value);
    if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) {
      show(clipStatus, 'Choose a start and a later end.', true);
      return;
    }
    const name = state.stream;
    show(clipStatus, 'Building the clip…');
    let resp;
    try {
      resp = await fetch('/getClip', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          StreamName: name,
          ClipFragmentSelector: {
            FragmentSelectorType: 'SERVER_TIMESTAMP',
            TimestampRange: { StartTimestamp: start / 1000, EndTimestamp: end / 1000 },
          },
        }),
      });
    } catch (e) {
      state.clip = { error: e.message };
      show(clipStatus, `Cannot reach the server: ${e.message}`, true);
      return;
    }
    if (!resp.ok) {
      const type = (resp.headers.get('x-amzn-ErrorType') || `HTTP ${resp.status}`).split(':')[0];
      const doc = await resp.json().catch(() => ({}));
      state.clip = { error: `${type}: ${doc.Message || doc.message || resp.statusText}` };
      show(clipStatus, `No clip: ${state.clip.error}`, true);
      return;
    }
    const blob = await resp.blob();
    const stamp = new Date(start).toISOString().replace(/[:]/g, '-').replace(/\..*/, '');
    const filename = `${name}-${stamp}.mp4`;
    const link = document.createElement('a');
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60 * 1000);
    state.clip = { bytes: blob.size, filename };
    show(clipStatus, `${filename}: ${(blob.size / 1048576).toFixed(1)} MiB`);
  });

  $('#timeline-close').addEventListener('click', () => {
    generation++;
    panel.hidden = true;
    state.stream = null;
  });
  window.addEventListener('resize', draw);
  window.freshetTimelineOpen = open;
})();
