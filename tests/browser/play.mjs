// Plays a Freshet video stream in the web console with a real browser, as a person
// would, and reports what the <video> element did.
//
//   node tests/browser/play.mjs ENDPOINT STREAM live
//   node tests/browser/play.mjs ENDPOINT STREAM ondemand START END
//   node tests/browser/play.mjs ENDPOINT STREAM replay START
//        [--seconds N] [--min-advance S] [--screenshot FILE.png] [--chromium PATH]
//        [--player native]   (the page's ?player=native: the browser's own HLS, no hls.js)
//
// START and END are epoch seconds (server timestamps). The script launches Debian's
// Chromium (/usr/bin/chromium, or --chromium / $CHROMIUM) headless with playwright-core
// and a fresh profile, opens ENDPOINT/console, finds the stream's row (pressing Refresh
// until it is listed), presses "Live", or "From time…" then types the times and presses
// "Play", waits for playback to start, then samples video.currentTime every 0.5 s for
// N seconds (default 6; ondemand/replay stop early once the video has ended).
//
// It prints one JSON object: the samples, `advance` (last minus first currentTime),
// videoWidth/videoHeight, video.error, the hls.js errors the page collected
// (window.freshetConsole), the page's status line, console errors, uncaught page
// errors and failed requests. Exit code 0 when playback started, currentTime advanced
// by at least --min-advance seconds (default 1) and there was no media error, no fatal
// hls.js error, no console or page error; 1 otherwise; 2 on bad arguments.

import { browserRun, parseOptions, argsOrExit, sleep } from './chromium.mjs';

const USAGE = 'usage: play.mjs ENDPOINT STREAM live|ondemand START END|replay START ' +
  '[--seconds N] [--min-advance S] [--screenshot FILE] [--chromium PATH] [--player native]';

function parseArgs(argv) {
  const { positional, opts } = parseOptions(argv, { '--player': 'player' });
  const [endpoint, stream, mode, start, end] = positional;
  if (!endpoint || !stream || !['live', 'ondemand', 'replay'].includes(mode)) throw new Error(USAGE);
  if (mode !== 'live' && !Number.isFinite(Number(start))) throw new Error(`${mode} needs START (epoch seconds)`);
  if (mode === 'ondemand' && !Number.isFinite(Number(end))) throw new Error('ondemand needs END (epoch seconds)');
  if (!(opts.seconds > 0) || !Number.isFinite(opts.minAdvance)) throw new Error(USAGE);
  return {
    endpoint: endpoint.replace(/\/+$/, ''), stream, mode,
    start: mode === 'live' ? null : Number(start),
    end: mode === 'ondemand' ? Number(end) : null,
    ...opts,
  };
}

const args = argsOrExit(() => parseArgs(process.argv.slice(2)));

const result = {
  ok: false,
  failures: [],
  mode: args.mode,
  stream: args.stream,
  browser: null,
  engine: null,
  hlsVersion: null,
  sessionUrl: null,
  startupSeconds: null,
  samples: [],
  advance: null,
  finalCurrentTime: null,
  ended: false,
  videoWidth: 0,
  videoHeight: 0,
  videoError: null,
  hlsErrors: [],
  mediaErrors: [],
  apiErrors: [],
  status: '',
  consoleErrors: [],
  pageErrors: [],
  failedRequests: [],
};

// Never hang: the whole run is bounded.
const { finish, launch } = browserRun(result, args.seconds);

// The console's state and the <video> element, read in the page.
function snapshot() {
  const v = document.querySelector('#video');
  const c = window.freshetConsole || {};
  return {
    currentTime: v.currentTime,
    paused: v.paused,
    ended: v.ended,
    readyState: v.readyState,
    buffered: v.buffered.length ? [v.buffered.start(0), v.buffered.end(v.buffered.length - 1)] : null,
    videoWidth: v.videoWidth,
    videoHeight: v.videoHeight,
    error: v.error ? { code: v.error.code, message: v.error.message } : null,
    fatal: (c.hlsErrors || []).some((e) => e.fatal),
    apiFailed: (c.apiErrors || []).length > 0,
  };
}

async function run() {
  const context = await launch(args.chromium, { width: 1280, height: 800 });
  result.browser = context.browser() ? context.browser().version() : null;
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') {
      const where = msg.location() && msg.location().url;
      result.consoleErrors.push(where ? `${msg.text()} (${where})` : msg.text());
    }
  });
  page.on('pageerror', (err) => result.pageErrors.push(String(err)));
  page.on('requestfailed', (req) => {
    const failure = req.failure();
    // Aborted requests (hls.js cancelling a load when stopped) are not failures.
    if (failure && failure.errorText !== 'net::ERR_ABORTED') {
      result.failedRequests.push(`${req.method()} ${req.url()}: ${failure.errorText}`);
    }
  });
  page.on('response', (resp) => {
    if (resp.status() >= 400) result.failedRequests.push(`${resp.request().method()} ${resp.url()}: HTTP ${resp.status()}`);
  });

  const query = args.player ? `?player=${encodeURIComponent(args.player)}` : '';
  await page.goto(`${args.endpoint}/console${query}`, { waitUntil: 'load' });
  result.hlsVersion = await page.evaluate(() => (window.Hls ? window.Hls.version : null));

  // Find the stream's row, pressing Refresh as a person would if it is not listed yet.
  const row = page.locator(`#streams tr.stream[data-stream=${JSON.stringify(args.stream)}]`);
  const listedBy = Date.now() + 30_000;
  while (!(await row.count())) {
    if (Date.now() > listedBy) throw new Error(`stream ${args.stream} is not listed in the console`);
    await sleep(1000);
    await page.getByRole('button', { name: 'Refresh' }).click();
  }

  if (args.mode === 'live') {
    await row.getByRole('button', { name: /^Live\b/ }).click();
  } else {
    await row.getByRole('button', { name: /^From time/ }).click();
    const form = page.getByRole('form', { name: `Play ${args.stream} from a time` });
    // datetime-local takes the browser's local time.
    const local = (secs) => page.evaluate((ms) => {
      const d = new Date(ms);
      const p = (n) => String(n).padStart(2, '0');
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}` +
        `T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
    }, secs * 1000);
    await form.getByLabel('From', { exact: true }).fill(await local(args.start));
    if (args.end !== null) await form.getByLabel('To', { exact: true }).fill(await local(args.end));
    await form.getByRole('button', { name: 'Play' }).click();
  }
  const clicked = Date.now();

  // Wait for playback to start (or fail).
  let snap = await page.evaluate(snapshot);
  while (!(snap.currentTime > 0 && !snap.paused)) {
    if (snap.error || snap.fatal || snap.apiFailed) break;
    if (Date.now() - clicked > 30_000) {
      result.failures.push('playback did not start within 30 s');
      break;
    }
    await sleep(100);
    snap = await page.evaluate(snapshot);
  }
  if (snap.currentTime > 0) {
    result.startupSeconds = (Date.now() - clicked) / 1000;
    const t0 = Date.now();
    for (;;) {
      snap = await page.evaluate(snapshot);
      const t = (Date.now() - t0) / 1000;
      result.samples.push({
        t: Number(t.toFixed(2)), currentTime: Number(snap.currentTime.toFixed(3)),
        paused: snap.paused, readyState: snap.readyState, buffered: snap.buffered,
      });
      if (snap.error || snap.fatal || snap.ended || t >= args.seconds) break;
      await sleep(500);
    }
  }

  const c = await page.evaluate(() => {
    const s = window.freshetConsole;
    return {
      engine: s.engine, sessionUrl: s.sessionUrl, hlsErrors: s.hlsErrors, mediaErrors: s.mediaErrors,
      apiErrors: s.apiErrors, status: document.querySelector('#status').textContent,
    };
  });
  Object.assign(result, c);
  result.ended = snap.ended;
  result.videoWidth = snap.videoWidth;
  result.videoHeight = snap.videoHeight;
  result.videoError = snap.error;
  result.finalCurrentTime = snap.currentTime;
  if (result.samples.length) {
    result.advance = Number((result.samples.at(-1).currentTime - result.samples[0].currentTime).toFixed(3));
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });

  if (result.startupSeconds === null && !result.failures.length) result.failures.push('playback did not start');
  if (result.videoError) result.failures.push(`video.error ${JSON.stringify(result.videoError)}`);
  for (const e of result.hlsErrors.filter((x) => x.fatal)) result.failures.push(`fatal hls.js error ${e.type} ${e.details}: ${e.message}`);
  for (const e of result.apiErrors) result.failures.push(`API error ${e.operation} ${e.type}: ${e.message}`);
  if (result.advance === null || result.advance < args.minAdvance) {
    result.failures.push(`currentTime advanced by ${result.advance} s, wanted at least ${args.minAdvance} s`);
  }
  for (const e of result.pageErrors) result.failures.push(`page error: ${e}`);
  for (const e of result.consoleErrors) result.failures.push(`console error: ${e}`);
  result.ok = result.failures.length === 0;
  return result.ok ? 0 : 1;
}

run().then(finish, (err) => {
  result.failures.push(`error: ${err && err.stack ? err.stack : err}`);
  finish(1);
});
