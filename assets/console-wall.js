// Freshet console, the video wall: every video stream live at once, in a grid of muted
// tiles, one hls.js player each (POST /getHLSStreamingSessionURL, PlaybackMode LIVE).
// A stream with nothing in the last 30 s shows "No signal" and is asked again every
// few seconds, so a camera that starts (or comes back) appears by itself; a player that
// fails or stops advancing is started again the same way. A click on a tile plays that
// stream in the main player (console.js). Plain script, no build step; served from
// assets/ (src/api/console.rs).
//
// With many streams, the wall shows the first 16 by name, or those whose name contains
// the filter's text.
//
// For automated tests the page keeps what the wall shows on `window.freshetWall`:
// `open`, `filter`, and `tiles` by stream name, each with `status` ("connecting", "playing",
// "no-signal" or "failed"), `message`, `sessions` (sessions opened), `currentTime`
// and `videoWidth`/`videoHeight` of its <video>.
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const panel = $('#wall-panel');
  const grid = $('#wall');
  const status = $('#wall-status');
  const openButton = $('#wall-open');
  const closeButton = $('#wall-close');
  const filterInput = $('#wall-filter');
  // Tiles beyond this many would each decode a stream on the viewer's machine.
  const MAX_TILES = 16;
  const RETRY_MS = 4000;
  // A playing tile whose time stands still this long is started again.
  const STALL_MS = 20000;

  const state = { open: false, filter: '', tiles: {} };
  window.freshetWall = state;
  // Bumped when the wall opens or closes, so that late answers are dropped.
  let generation = 0;
  let watchdog = null;

  const { show } = window.freshetConsoleApi;

  // The public view of a tile (what `window.freshetWall.tiles` holds); a tile of a
  // wall since redrawn publishes nothing.
  function publish(tile) {
    if (tile.mine !== generation) return;
    state.tiles[tile.name] = {
      status: tile.status,
      message: tile.message,
      sessions: tile.sessions,
      currentTime: tile.video.currentTime,
      videoWidth: tile.video.videoWidth,
      videoHeight: tile.video.videoHeight,
    };
  }

  function setTile(tile, status, message) {
    tile.status = status;
    tile.message = message;
    tile.element.classList.toggle('no-signal', status === 'no-signal');
    tile.element.classList.toggle('failed', status === 'failed');
    tile.label.textContent = {
      connecting: 'connecting…', playing: 'live', 'no-signal': 'No signal', failed: 'failed',
    }[status];
    tile.label.title = message || '';
    publish(tile);
  }

  function detach(tile) {
    clearTimeout(tile.retry);
    tile.retry = null;
    if (tile.hls) {
      tile.hls.destroy();
      tile.hls = null;
    }
    if (tile.video.hasAttribute('src')) {
      tile.video.removeAttribute('src');
      tile.video.load();
    }
  }

  function retryLater(tile, mine) {
    clearTimeout(tile.retry);
    tile.retry = setTimeout(() => {
      if (mine === generation) connect(tile, mine);
    }, RETRY_MS);
  }

  async function connect(tile, mine) {
    detach(tile);
    if (tile.status !== 'no-signal') setTile(tile, 'connecting', '');
    const { api } = window.freshetConsoleApi;
    let url;
    try {
      url = (await api('getHLSStreamingSessionURL', {
        StreamName: tile.name,
        PlaybackMode: 'LIVE',
        ContainerFormat: 'FRAGMENTED_MP4',
        Expires: 43200,
      }, true)).HLSStreamingSessionURL;
    } catch (e) {
      if (mine !== generation) return;
      if (e.type === 'ResourceNotFoundException') {
        setTile(tile, 'no-signal', 'Nothing arrived in the last 30 s.');
      } else {
        setTile(tile, 'failed', e.message);
      }
      retryLater(tile, mine);
      return;
    }
    if (mine !== generation) return;
    tile.sessions += 1;
    const Hls = window.Hls;
    if (!(Hls && Hls.isSupported())) {
      setTile(tile, 'failed', 'This browser cannot play HLS with Media Source Extensions (hls.js).');
      return;
    }
    // Small buffers: a wall is for watching now, and many players share one machine.
    const hls = new Hls({ backBufferLength: 10, maxBufferLength: 10, liveDurationInfinity: true });
    tile.hls = hls;
    tile.lastTime = -1;
    tile.lastMoved = Date.now();
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (!data.fatal || tile.hls !== hls || mine !== generation) return;
      setTile(tile, 'failed', `hls.js ${data.type} ${data.details}`);
      detach(tile);
      retryLater(tile, mine);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      if (tile.hls !== hls) return;
      const p = tile.video.play();
      if (p && p.catch) p.catch(() => {});
    });
    hls.loadSource(new URL(url, location.href).href);
    hls.attachMedia(tile.video);
  }

  function makeTile(name, mine) {
    const element = $('#tile-template').content.firstElementChild.cloneNode(true);
    element.dataset.stream = name;
    element.setAttribute('role', 'button');
    element.setAttribute('tabindex', '0');
    element.setAttribute('aria-label', `Open ${name} in the player`);
    element.querySelector('.tile-name').textContent = name;
    const tile = {
      name, mine, element, video: element.querySelector('video'), label: element.querySelector('.tile-status'),
      hls: null, retry: null, status: 'connecting', message: '', sessions: 0, lastTime: -1, lastMoved: Date.now(),
    };
    element.freshetTile = tile;
    tile.video.addEventListener('playing', () => {
      if (tile.hls) setTile(tile, 'playing', '');
    });
    tile.video.addEventListener('timeupdate', () => publish(tile));
    const openInPlayer = () => window.freshetConsoleApi.playLive(name);
    element.addEventListener('click', openInPlayer);
    element.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' || ev.key === ' ') {
        ev.preventDefault();
        openInPlayer();
      }
    });
    grid.append(element);
    connect(tile, mine);
    return tile;
  }

  // Started again: tiles whose player stopped advancing (the camera stopped).
  function checkStalls(tiles, mine) {
    const now = Date.now();
    for (const tile of tiles) {
      if (!tile.hls) continue;
      const t = tile.video.currentTime;
      if (t !== tile.lastTime) {
        tile.lastTime = t;
        tile.lastMoved = now;
      } else if (now - tile.lastMoved > STALL_MS) {
        setTile(tile, 'no-signal', `No new video for ${Math.round(STALL_MS / 1000)} s.`);
        connect(tile, mine);
      }
    }
  }

  async function open() {
    clear();
    const mine = generation;
    state.open = true;
    panel.hidden = false;
    show(status, 'Listing the streams…');
    let streams;
    try {
      streams = await window.freshetConsoleApi.listStreams();
    } catch (e) {
      if (mine === generation) show(status, `Cannot list the streams: ${e.message}`, true);
      return;
    }
    if (mine !== generation) return;
    const filter = filterInput.value.trim();
    state.filter = filter;
    const names = streams.filter((s) => s.Status !== 'DELETING').map((s) => s.StreamName)
      .filter((n) => !filter || n.includes(filter)).sort();
    const shown = names.slice(0, MAX_TILES);
    const tiles = shown.map((name) => makeTile(name, mine));
    const what = filter ? ` containing "${filter}"` : '';
    show(status, !names.length ? (filter ? `No stream's name contains "${filter}".` : 'No video streams yet.') :
      names.length > MAX_TILES ? `The first ${MAX_TILES} of ${names.length} streams${what}, by name.` :
        `${names.length} stream${names.length === 1 ? '' : 's'}${what}.`);
    watchdog = setInterval(() => checkStalls(tiles, mine), 2000);
    panel.scrollIntoView({ block: 'nearest' });
  }

  // Stops every tile's player and removes the tiles (the panel stays as it is, so
  // that the filter keeps its focus while the wall is redrawn).
  function clear() {
    generation++;
    clearInterval(watchdog);
    watchdog = null;
    for (const element of grid.querySelectorAll('figure.tile')) {
      const tile = element.freshetTile;
      if (tile) detach(tile);
    }
    grid.replaceChildren();
    state.tiles = {};
  }

  function close() {
    clear();
    state.open = false;
    panel.hidden = true;
  }

  openButton.addEventListener('click', open);
  closeButton.addEventListener('click', close);
  // Typing narrows the wall, once the typing pauses.
  let typing = null;
  filterInput.addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      if (state.open) open();
    }, 300);
  });
})();
