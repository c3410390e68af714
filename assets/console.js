// Freshet console: lists the video streams (POST /listStreams) and plays one with
// hls.js (POST /getHLSStreamingSessionURL), live or from a chosen time; and what the
// other console scripts share (`window.freshetConsoleApi`: the API call, the /metrics
// reader, the player). Plain script,
// no build step; served by the server itself from assets/ (src/api/console.rs).
//
// For automated tests the page keeps what happened on `window.freshetConsole`:
// `hlsErrors` (every hls.js ERROR event), `mediaErrors` (the <video> element's
// errors), `apiErrors` (failed API calls), `engine` ("hls.js" or "native"),
// `mode`, `stream` and `sessionUrl`.
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const video = $('#video');
  const streamsBody = $('#streams tbody');
  const refreshButton = $('#refresh');
  const stopButton = $('#stop');
  const title = $('#player-title');
  const statusLine = $('#status');
  const listStatus = $('#list-status');
  const clock = $('#clock');
  // `?player=native` forces the browser's own HLS support (where it has any).
  const forceNative = new URLSearchParams(location.search).get('player') === 'native';

  const state = {
    engine: null,
    mode: null,
    stream: null,
    sessionUrl: null,
    hls: null,
    hlsVersion: window.Hls ? window.Hls.version : null,
    hlsErrors: [],
    mediaErrors: [],
    apiErrors: [],
  };
  window.freshetConsole = state;
  // Bumped whenever playback starts or stops, so late answers of an older request
  // are ignored.
  let generation = 0;

  // ---- status lines ------------------------------------------------------------

  // A status line's text, marked as an error or not (the other scripts use it too).
  function show(element, text, isError) {
    element.textContent = text;
    element.classList.toggle('error', !!isError);
  }
  const setStatus = (text, isError) => show(statusLine, text, isError);

  // ---- API -----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(operation, status, type, message) {
      super(`${type}: ${message}`);
      this.operation = operation;
      this.status = status;
      this.type = type;
      this.detail = message;
    }
  }

  // One REST-JSON call of the Kinesis Video API on this server. Errors carry the
  // `x-amzn-ErrorType` header and the body's `Message`; they are kept in
  // `apiErrors` unless `quiet` (callers that expect and handle them, like the wall's
  // retries of idle cameras).
  async function api(operation, body, quiet = false) {
    let resp;
    try {
      resp = await fetch('/' + operation, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(operation, 0, 'NetworkError', `the server cannot be reached (${e.message})`);
    }
    const text = await resp.text();
    let doc = null;
    try {
      doc = text ? JSON.parse(text) : {};
    } catch (_) {
      doc = null;
    }
    if (!resp.ok || doc === null) {
      // AWS may append ":<documentation URL>" to the type.
      const type = (resp.headers.get('x-amzn-ErrorType') || `HTTP ${resp.status}`).split(':')[0];
      const message = (doc && (doc.Message || doc.message)) || text || resp.statusText;
      const err = new ApiError(operation, resp.status, type, message);
      if (!quiet) state.apiErrors.push({ operation, status: resp.status, type, message });
      throw err;
    }
    return doc;
  }

  // ---- /metrics ------------------------------------------------------------------

  // Sample values of `names` by one label from the server's OpenMetrics text, summed
  // over their other labels: { metric: { label value: sum } }.
  function metricsByLabel(text, label, names) {
    const out = {};
    for (const name of names) out[name] = {};
    const line = /^([a-z_]+)\{([^}]*)\} ([0-9.eE+-]+|NaN)$/;
    const want = new RegExp(`(?:^|,)${label}="((?:[^"\\\\]|\\\\.)*)"`);
    for (const l of text.split('\n')) {
      const m = line.exec(l);
      if (!m || !(m[1] in out)) continue;
      const v = want.exec(m[2]);
      if (v) out[m[1]][v[1]] = (out[m[1]][v[1]] || 0) + Number(m[3]);
    }
    return out;
  }

  // ---- time helpers --------------------------------------------------------------

  const pad = (n) => String(n).padStart(2, '0');

  // The value a datetime-local input shows for a moment, in this browser's time zone.
  function localInputValue(ms) {
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
      `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // Epoch milliseconds of a datetime-local value (local time), or NaN.
  function inputMs(value) {
    return value ? new Date(value).getTime() : NaN;
  }

  function zoneLabel() {
    const offset = -new Date().getTimezoneOffset();
    const sign = offset >= 0 ? '+' : '-';
    const abs = Math.abs(offset);
    const utc = `UTC${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return zone ? `${zone}, ${utc}` : utc;
  }

  function formatTime(value) {
    if (value === undefined || value === null) return '';
    const ms = typeof value === 'number' ? value * 1000 : Date.parse(value);
    return Number.isFinite(ms) ? new Date(ms).toLocaleString() : String(value);
  }

  // ---- stream list ---------------------------------------------------------------

  async function listStreams() {
    const streams = [];
    let token = null;
    for (let page = 0; page < 1000; page++) {
      const doc = await api('listStreams', token ? { NextToken: token } : {});
      streams.push(...(doc.StreamInfoList || []));
      token = doc.NextToken;
      if (!token) break;
    }
    return streams;
  }

  async function refresh() {
    refreshButton.disabled = true;
    show(listStatus, 'Loading…');
    try {
      const streams = await listStreams();
      render(streams);
      show(listStatus, streams.length ? `${streams.length} stream${streams.length === 1 ? '' : 's'}` :
        'No video streams yet. Push one, e.g. freshet video push FILE --stream NAME');
    } catch (e) {
      show(listStatus, `Cannot list the streams: ${e.message}`, true);
    } finally {
      refreshButton.disabled = false;
    }
  }

  function render(streams) {
    streamsBody.replaceChildren();
    const template = $('#row-template');
    for (const info of streams) {
      const row = template.content.firstElementChild.cloneNode(true);
      const name = info.StreamName;
      row.dataset.stream = name;
      row.querySelector('.name').textContent = name;
      row.querySelector('.state').textContent = info.Status || '';
      const hours = info.DataRetentionInHours;
      row.querySelector('.retention').textContent =
        hours === undefined ? '' : hours === 0 ? 'none' : `${hours} h`;
      row.querySelector('.created').textContent = formatTime(info.CreationTime);
      for (const button of row.querySelectorAll('button')) {
        button.setAttribute('aria-label', `${button.textContent} ${name}`);
      }
      row.querySelector('[data-action="live"]').addEventListener('click', () => playLive(name));
      row.querySelector('[data-action="from"]').addEventListener('click', (ev) => toggleTimeForm(row, ev.currentTarget));
      row.querySelector('[data-action="timeline"]').addEventListener('click', () => {
        if (window.freshetTimelineOpen) window.freshetTimelineOpen(name);
      });
      row.classList.toggle('playing', name === state.stream);
      streamsBody.append(row);
    }
  }

  function toggleTimeForm(row, button) {
    const next = row.nextElementSibling;
    if (next && next.classList.contains('time-row')) {
      next.remove();
      button.setAttribute('aria-expanded', 'false');
      return;
    }
    const timeRow = $('#time-template').content.firstElementChild.cloneNode(true);
    const name = row.dataset.stream;
    timeRow.dataset.stream = name;
    const form = timeRow.querySelector('form');
    form.setAttribute('aria-label', `Play ${name} from a time`);
    form.elements.start.value = localInputValue(Date.now() - 10 * 60 * 1000);
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const start = inputMs(form.elements.start.value);
      const end = inputMs(form.elements.end.value);
      if (!Number.isFinite(start)) {
        setStatus('Choose the time to play from.', true);
        return;
      }
      if (Number.isFinite(end) && end <= start) {
        setStatus('The end must be after the start.', true);
        return;
      }
      playFrom(name, start, Number.isFinite(end) ? end : null);
    });
    row.after(timeRow);
    button.setAttribute('aria-expanded', 'true');
    form.elements.start.focus();
  }

  // ---- playback ------------------------------------------------------------------

  function playLive(name) {
    return play(name, 'LIVE', null, 'LIVE');
  }

  function playFrom(name, startMs, endMs) {
    const range = { StartTimestamp: Math.floor(startMs / 1000) };
    if (endMs !== null) range.EndTimestamp = Math.ceil(endMs / 1000);
    const selector = { FragmentSelectorType: 'SERVER_TIMESTAMP', TimestampRange: range };
    const what = endMs === null ? `from ${new Date(startMs).toLocaleString()}` :
      `${new Date(startMs).toLocaleString()} – ${new Date(endMs).toLocaleString()}`;
    return play(name, endMs === null ? 'LIVE_REPLAY' : 'ON_DEMAND', selector, what);
  }

  async function play(name, mode, selector, what) {
    stop();
    const mine = generation;
    state.stream = name;
    state.mode = mode;
    markPlaying();
    title.textContent = `${name} · ${what}`;
    setStatus(`Opening a ${mode} session…`);
    const request = {
      StreamName: name,
      PlaybackMode: mode,
      ContainerFormat: 'FRAGMENTED_MP4',
      DisplayFragmentTimestamp: 'ALWAYS',
      Expires: 43200,
    };
    if (selector) request.HLSFragmentSelector = selector;
    let url;
    try {
      url = (await api('getHLSStreamingSessionURL', request)).HLSStreamingSessionURL;
    } catch (e) {
      if (mine === generation) {
        let hint = '';
        if (mode === 'LIVE' && e.type === 'ResourceNotFoundException') {
          hint = '\nNothing arrived in the last 30 s: is a producer pushing? "From time…" plays what is stored.';
        } else if (mode !== 'LIVE' && e.type === 'ResourceNotFoundException') {
          hint = '\nNothing is stored in that time range.';
        }
        setStatus(`Cannot play ${name} (${mode}): ${e.message}${hint}`, true);
        stopButton.disabled = false;
      }
      return;
    }
    if (mine !== generation) return;
    if (!url) {
      setStatus('The server gave no HLSStreamingSessionURL.', true);
      return;
    }
    // The server names itself by the Host it was asked for; behind a TLS proxy keep
    // the page's scheme so the browser does not block mixed content.
    const u = new URL(url, location.href);
    if (location.protocol === 'https:' && u.protocol === 'http:' && u.host === location.host) {
      u.protocol = 'https:';
    }
    state.sessionUrl = u.href;
    attach(u.href, mine);
  }

  function attach(url, mine) {
    stopButton.disabled = false;
    const Hls = window.Hls;
    const hlsJs = !forceNative && Hls && Hls.isSupported();
    if (hlsJs) {
      state.engine = 'hls.js';
      const hls = new Hls({ backBufferLength: 120 });
      state.hls = hls;
      let recovered = false;
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (mine !== generation) return;
        const message = hlsErrorText(data);
        state.hlsErrors.push({
          type: data.type, details: data.details, fatal: !!data.fatal, message, at: Date.now(),
        });
        if (!data.fatal) return;
        if (data.details === Hls.ErrorDetails.MANIFEST_INCOMPATIBLE_CODECS_ERROR) {
          setStatus(`This browser cannot decode ${state.stream}: ${message} (H.265 needs a browser with HEVC support).`, true);
          hls.destroy();
          if (state.hls === hls) state.hls = null;
          return;
        }
        if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !recovered) {
          recovered = true;
          setStatus(`Media error (${data.details}); trying to recover…`, true);
          hls.recoverMediaError();
          return;
        }
        setStatus(`Playback failed: hls.js ${data.type} ${data.details}${message ? `: ${message}` : ''}`, true);
        hls.destroy();
        if (state.hls === hls) state.hls = null;
      });
      hls.on(Hls.Events.MANIFEST_PARSED, () => {
        if (mine !== generation) return;
        setStatus(`Loading ${state.stream} (${state.mode}, hls.js ${Hls.version})…`);
        startPlaying(mine);
      });
      hls.loadSource(url);
      hls.attachMedia(video);
    } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
      state.engine = 'native';
      video.src = url;
      startPlaying(mine);
    } else {
      setStatus('This browser can play HLS neither with Media Source Extensions (hls.js) nor natively.', true);
    }
  }

  function startPlaying(mine) {
    const p = video.play();
    if (p && p.catch) {
      p.catch((e) => {
        if (mine === generation && e.name === 'NotAllowedError') {
          setStatus('The browser blocked autoplay: press play.');
        }
      });
    }
  }

  // A readable reason for an hls.js error, with the server's AWS error if it sent one.
  function hlsErrorText(data) {
    const parts = [];
    if (data.response && data.response.code) parts.push(`HTTP ${data.response.code}`);
    const xhr = data.networkDetails;
    if (xhr && typeof xhr.getResponseHeader === 'function') {
      try {
        const type = xhr.getResponseHeader('x-amzn-ErrorType');
        let message = '';
        if (typeof xhr.responseText === 'string' && xhr.responseText) {
          message = JSON.parse(xhr.responseText).Message || '';
        }
        if (type) parts.push(`${type.split(':')[0]}${message ? `: ${message}` : ''}`);
      } catch (_) {
        // not an AWS error body
      }
    }
    if (data.reason) parts.push(data.reason);
    else if (data.error && data.error.message) parts.push(data.error.message);
    return parts.join('; ');
  }

  function stop() {
    generation++;
    if (state.hls) {
      state.hls.destroy();
      state.hls = null;
    }
    if (video.hasAttribute('src')) {
      video.removeAttribute('src');
      video.load();
    }
    state.engine = null;
    state.sessionUrl = null;
    state.stream = null;
    state.mode = null;
    clock.textContent = '';
    markPlaying();
  }

  function markPlaying() {
    for (const row of streamsBody.querySelectorAll('tr.stream')) {
      row.classList.toggle('playing', row.dataset.stream === state.stream);
    }
  }

  video.addEventListener('error', () => {
    if (!state.engine) return;
    const err = video.error;
    const entry = { code: err ? err.code : 0, message: err ? err.message : '' };
    state.mediaErrors.push(entry);
    // hls.js reports (and may recover from) decode errors itself.
    if (state.engine === 'native') {
      setStatus(`Playback failed: media error ${entry.code}${entry.message ? `: ${entry.message}` : ''}`, true);
    }
  });

  video.addEventListener('playing', () => {
    if (!state.engine) return;
    setStatus(`Playing ${state.stream} (${state.mode}, ${state.engine === 'hls.js' ? `hls.js ${window.Hls.version}` : 'native HLS'})`);
  });

  video.addEventListener('ended', () => {
    if (!state.engine) return;
    setStatus(`Finished: end of ${state.stream} (${state.mode}).`);
  });

  video.addEventListener('timeupdate', () => {
    const hls = state.hls;
    const date = hls && hls.playingDate;
    if (!date) return;
    let text = `Showing ${date.toLocaleString()}`;
    if (state.mode === 'LIVE' && Number.isFinite(hls.latency) && hls.latency > 0) {
      text += ` (${hls.latency.toFixed(1)} s behind live)`;
    }
    clock.textContent = text;
  });

  stopButton.addEventListener('click', () => {
    stop();
    title.textContent = 'Nothing playing';
    setStatus('Stopped.');
    stopButton.disabled = true;
  });
  refreshButton.addEventListener('click', refresh);
  // What the timeline (console-timeline.js) and the wall (console-wall.js) use.
  window.freshetConsoleApi = {
    api, listStreams, playLive, playFrom, localInputValue, inputMs, setStatus, show, metricsByLabel,
  };
  $('#tz').textContent = zoneLabel();
  if (!window.Hls) {
    setStatus('hls.js did not load (/console/vendor/hls.min.js); only native HLS can be used.', true);
  }
  refresh();
})();
