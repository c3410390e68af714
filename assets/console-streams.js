// Freshet console, data streams: the stream table (GET /v1/streams), rates and a chart
// from the server's own Prometheus figures (GET /metrics: the same counters a Prometheus
// server scrapes), and a live record tail (GET /v1/streams/NAME/records?follow=true,
// read as it streams) with JSON pretty-printing and a filter. Plain script, no build
// step; served by the server itself from assets/ (src/api/console.rs).
//
// For automated tests the page keeps what it shows on `window.freshetData`: `streams`
// (names listed), `samples` (metrics polls so far), `rates` (records/s per stream at the
// last poll), `history` (per stream: records/s per poll, oldest first), and `tail`
// (`stream`, `received`, `shown`, `error`).
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const body = $('#data-streams tbody');
  const listStatus = $('#data-status');
  const refreshButton = $('#data-refresh');
  const canvas = $('#rate-chart');
  const caption = $('#chart-caption');
  const tailTitle = $('#tail-title');
  const tailStatus = $('#tail-status');
  const tailList = $('#tail');
  const search = $('#tail-search');
  const stopButton = $('#tail-stop');

  // Poll interval of /metrics, and how many polls the chart keeps (2 minutes).
  const POLL_MS = 2000;
  const KEEP = 60;
  // Records kept in the tail; older ones are dropped from the page.
  const TAIL_KEEP = 500;
  const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2'];

  const state = {
    streams: [],
    samples: 0,
    rates: {},
    byteRates: {},
    history: {},
    tail: { stream: null, received: 0, shown: 0, error: null },
  };
  window.freshetData = state;

  const { show } = window.freshetConsoleApi;

  // ---- the stream table ----------------------------------------------------------

  async function listStreams() {
    const resp = await fetch('/v1/streams', { headers: { Accept: 'application/json' } });
    const doc = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(`${doc.error || resp.status}: ${doc.message || resp.statusText}`);
    return doc.streams || [];
  }

  async function refresh() {
    refreshButton.disabled = true;
    try {
      const streams = await listStreams();
      state.streams = streams.map((s) => s.name);
      render(streams);
      show(listStatus, streams.length ? `${streams.length} data stream${streams.length === 1 ? '' : 's'}` :
        'No data streams yet. Create one, e.g. freshet stream create NAME');
    } catch (e) {
      show(listStatus, `Cannot list the data streams: ${e.message}`, true);
    } finally {
      refreshButton.disabled = false;
    }
  }

  function render(streams) {
    body.replaceChildren();
    for (const s of streams) {
      const row = document.createElement('tr');
      row.className = 'data-stream';
      row.dataset.stream = s.name;
      const cells = [s.name, s.status, String(s.openShards), `${s.retentionHours} h`, '', ''];
      for (const [i, text] of cells.entries()) {
        const td = document.createElement('td');
        td.textContent = text;
        if (i === 4) td.className = 'rate';
        if (i === 5) td.className = 'byte-rate';
        row.append(td);
      }
      const actions = document.createElement('td');
      const tail = document.createElement('button');
      tail.type = 'button';
      tail.textContent = 'Tail';
      tail.setAttribute('aria-label', `Tail ${s.name}`);
      tail.addEventListener('click', () => startTail(s.name));
      actions.append(tail);
      row.append(actions);
      row.classList.toggle('tailing', s.name === state.tail.stream);
      body.append(row);
    }
    showRates();
  }

  // ---- figures from /metrics -----------------------------------------------------

  let previous = null;

  async function poll() {
    let text;
    try {
      const resp = await fetch('/metrics');
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      text = await resp.text();
    } catch (e) {
      show(caption, `Cannot read /metrics: ${e.message}`, true);
      return;
    }
    const now = performance.now();
    const counters = window.freshetConsoleApi.metricsByLabel(text, 'stream',
      ['freshet_incoming_records_total', 'freshet_incoming_bytes_total']);
    if (previous) {
      const secs = (now - previous.at) / 1000;
      const streams = new Set([...Object.keys(counters.freshet_incoming_records_total), ...state.streams]);
      for (const stream of streams) {
        const rate = (metric) => {
          const before = previous.counters[metric][stream] || 0;
          const after = counters[metric][stream] || 0;
          // A counter that went down was reset (the stream was deleted and made again).
          return Math.max(0, after - before) / secs;
        };
        state.rates[stream] = rate('freshet_incoming_records_total');
        state.byteRates[stream] = rate('freshet_incoming_bytes_total');
        const h = state.history[stream] || (state.history[stream] = []);
        h.push(state.rates[stream]);
        if (h.length > KEEP) h.shift();
      }
      state.samples += 1;
      showRates();
      draw();
    }
    previous = { at: now, counters };
  }

  function formatRate(value, unit) {
    if (value === undefined) return '';
    if (value >= 1e6) return `${(value / 1e6).toFixed(1)} M${unit}/s`;
    if (value >= 1e3) return `${(value / 1e3).toFixed(1)} k${unit}/s`;
    return `${value.toFixed(value < 10 ? 1 : 0)} ${unit}/s`;
  }

  function showRates() {
    for (const row of body.querySelectorAll('tr.data-stream')) {
      const s = row.dataset.stream;
      row.querySelector('.rate').textContent = formatRate(state.rates[s], '');
      row.querySelector('.byte-rate').textContent = formatRate(state.byteRates[s], 'B');
    }
  }

  // A line per stream (the busiest few) of incoming records/s over the last polls.
  function draw() {
    const ctx = canvas.getContext('2d');
    const w = canvas.width;
    const h = canvas.height;
    const pad = { left: 48, right: 110, top: 10, bottom: 22 };
    ctx.clearRect(0, 0, w, h);
    const busiest = Object.entries(state.history)
      .map(([stream, points]) => [stream, points, Math.max(0, ...points)])
      .sort((a, b) => b[2] - a[2])
      .slice(0, COLORS.length);
    const top = Math.max(1, ...busiest.map((b) => b[2]));
    const x = (i) => pad.left + (w - pad.left - pad.right) * (i / (KEEP - 1));
    const y = (v) => h - pad.bottom - (h - pad.top - pad.bottom) * (v / top);
    ctx.strokeStyle = '#9ca3af';
    ctx.fillStyle = '#374151';
    ctx.font = '11px sans-serif';
    ctx.beginPath();
    ctx.moveTo(pad.left, pad.top);
    ctx.lineTo(pad.left, h - pad.bottom);
    ctx.lineTo(w - pad.right, h - pad.bottom);
    ctx.stroke();
    ctx.textAlign = 'right';
    ctx.fillText(formatRate(top, ''), pad.left - 4, pad.top + 8);
    ctx.fillText('0', pad.left - 4, h - pad.bottom);
    ctx.textAlign = 'left';
    ctx.fillText(`${(KEEP * POLL_MS) / 60000} min ago`, pad.left, h - 6);
    ctx.textAlign = 'right';
    ctx.fillText('now', w - pad.right, h - 6);
    ctx.textAlign = 'left';
    busiest.forEach(([stream, points], n) => {
      ctx.strokeStyle = COLORS[n];
      ctx.lineWidth = 2;
      ctx.beginPath();
      const offset = KEEP - points.length;
      points.forEach((v, i) => (i ? ctx.lineTo(x(offset + i), y(v)) : ctx.moveTo(x(offset + i), y(v))));
      ctx.stroke();
      ctx.fillStyle = COLORS[n];
      ctx.fillText(stream.length > 20 ? `${stream.slice(0, 19)}…` : stream, w - pad.right + 8, pad.top + 12 + 14 * n);
    });
    canvas.dataset.points = String(busiest.reduce((n, b) => n + b[1].length, 0));
    show(caption, busiest.length ? 'Incoming records per second, last 2 minutes (from /metrics)' :
      'No records put yet.');
  }

  // ---- the record tail -----------------------------------------------------------

  let tailAbort = null;

  function describe(record) {
    const text = record.text;
    if (typeof text === 'string') {
      try {
        return { kind: 'json', body: JSON.stringify(JSON.parse(text), null, 2) };
      } catch (_) {
        return { kind: 'text', body: text };
      }
    }
    const bytes = record.data ? Math.floor((record.data.length * 3) / 4) : 0;
    return { kind: 'binary', body: `(binary, about ${bytes} bytes, base64 ${record.data.slice(0, 80)}…)` };
  }

  function matches(item) {
    const q = search.value.trim().toLowerCase();
    return !q || item.textContent.toLowerCase().includes(q);
  }

  function applyFilter() {
    let shown = 0;
    for (const item of tailList.children) {
      item.hidden = !matches(item);
      if (!item.hidden) shown += 1;
    }
    state.tail.shown = shown;
  }

  function append(record) {
    const item = document.createElement('li');
    item.className = 'record';
    const meta = document.createElement('div');
    meta.className = 'meta';
    const when = new Date(record.approximateArrivalTimestamp).toLocaleTimeString();
    meta.textContent = `${when} · ${record.shardId} · key ${record.partitionKey} · ${record.sequenceNumber}`;
    const { kind, body: text } = describe(record);
    const pre = document.createElement('pre');
    pre.className = kind;
    pre.textContent = text;
    item.append(meta, pre);
    item.hidden = !matches(item);
    tailList.prepend(item);
    while (tailList.children.length > TAIL_KEEP) tailList.lastElementChild.remove();
    state.tail.received += 1;
    state.tail.shown = [...tailList.children].filter((c) => !c.hidden).length;
  }

  async function startTail(name) {
    stopTail();
    const abort = new AbortController();
    tailAbort = abort;
    tailList.replaceChildren();
    state.tail = { stream: name, received: 0, shown: 0, error: null };
    tailTitle.textContent = `Tail of ${name}`;
    stopButton.disabled = false;
    for (const row of body.querySelectorAll('tr.data-stream')) row.classList.toggle('tailing', row.dataset.stream === name);
    show(tailStatus, 'Waiting for new records…');
    try {
      const url = `/v1/streams/${encodeURIComponent(name)}/records?start=LATEST&follow=true&idleTimeout=3600`;
      const resp = await fetch(url, { signal: abort.signal });
      if (!resp.ok) {
        const doc = await resp.json().catch(() => ({}));
        throw new Error(`${doc.error || resp.status}: ${doc.message || resp.statusText}`);
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let pending = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        pending += decoder.decode(value, { stream: true });
        const lines = pending.split('\n');
        pending = lines.pop();
        for (const line of lines) {
          if (!line.trim()) continue;
          append(JSON.parse(line));
        }
        show(tailStatus, `${state.tail.received} record${state.tail.received === 1 ? '' : 's'} since the tail started`);
      }
      if (tailAbort === abort) show(tailStatus, 'The tail ended (no records for an hour).');
    } catch (e) {
      if (abort.signal.aborted) return;
      state.tail.error = e.message;
      show(tailStatus, `Tail failed: ${e.message}`, true);
    } finally {
      if (tailAbort === abort) {
        stopButton.disabled = true;
        tailAbort = null;
      }
    }
  }

  function stopTail() {
    if (tailAbort) tailAbort.abort();
    tailAbort = null;
    stopButton.disabled = true;
    if (state.tail.stream) show(tailStatus, `Stopped after ${state.tail.received} records.`);
  }

  refreshButton.addEventListener('click', refresh);
  stopButton.addEventListener('click', stopTail);
  search.addEventListener('input', applyFilter);
  refresh();
  poll();
  setInterval(poll, POLL_MS);
  setInterval(refresh, 15000);
})();
