// Opens the web console's video wall in a real browser and reports what each tile did.
//
//   node tests/browser/wall.mjs ENDPOINT --live A,B [--idle C] [--filter TEXT]
//        [--seconds N] [--min-advance S] [--screenshot FILE.png] [--chromium PATH]
//
// Launches Debian's Chromium headless (chromium.mjs), opens ENDPOINT/console, presses
// "Wall" (and types --filter into the wall's filter, as a person with many streams
// would), waits until every --live stream's tile plays (status "playing", currentTime
// advancing) and every --idle stream's tile shows "No signal", samples each live tile's
// currentTime for N seconds (default 6), then clicks the first live tile and checks that
// the main player opens that stream live.
//
// It prints one JSON object: `tiles` (what window.freshetWall reports per stream, with
// `advance`: last minus first sampled currentTime), `labels` (each tile's caption as
// shown), `player` (the main player's stream and mode after the click), console and page
// errors. Exit code 0 when every live tile advanced by at least --min-advance seconds
// (default 1) with a decoded picture, every idle tile showed "No signal", the click
// opened the player, and there was no page error; 1 otherwise; 2 on bad arguments.

import { browserRun, parseOptions, waitUntil, argsOrExit, sleep } from './chromium.mjs';

const USAGE = 'usage: wall.mjs ENDPOINT --live A,B [--idle C] [--seconds N] [--min-advance S] ' +
  '[--screenshot FILE] [--chromium PATH]';

const args = argsOrExit(() => {
  const { positional, opts } = parseOptions(process.argv.slice(2),
    { '--live': 'live', '--idle': 'idle', '--filter': 'filter' });
  const [endpoint] = positional;
  const live = (opts.live || '').split(',').filter(Boolean);
  const idle = (opts.idle || '').split(',').filter(Boolean);
  if (!endpoint || !live.length || !(opts.seconds > 0)) throw new Error(USAGE);
  return { ...opts, endpoint: endpoint.replace(/\/+$/, ''), live, idle };
});

const result = {
  ok: false,
  failures: [],
  tiles: {},
  labels: {},
  samples: {},
  player: null,
  consoleErrors: [],
  pageErrors: [],
};
const { finish, openPage } = browserRun(result, args.seconds + 60);

async function run() {
  const page = await openPage(args.chromium, { width: 1280, height: 900 }, `${args.endpoint}/console`);
  const wall = () => page.evaluate(() => window.freshetWall);
  const tileOf = (w, name) => (w && w.tiles ? w.tiles[name] : undefined);

  await page.getByRole('button', { name: 'Wall', exact: true }).click();
  if (args.filter) {
    await page.getByRole('searchbox', { name: 'Show streams whose name contains' }).fill(args.filter);
    await waitUntil(result, 15, 'the wall filtered', async () => {
      const w = await wall();
      return w && w.filter === args.filter;
    });
  }
  // Every live tile playing, every idle one without signal.
  await waitUntil(result, 45, 'every tile to play or show No signal', async () => {
    const w = await wall();
    return args.live.every((n) => {
      const t = tileOf(w, n);
      return t && t.status === 'playing' && t.currentTime > 0 && t.videoWidth > 0;
    }) && args.idle.every((n) => {
      const t = tileOf(w, n);
      return t && t.status === 'no-signal';
    });
  });

  // Each live tile advances as the cameras keep pushing.
  for (const n of args.live) result.samples[n] = [];
  const t0 = Date.now();
  while ((Date.now() - t0) / 1000 < args.seconds) {
    const w = await wall();
    for (const n of args.live) {
      const t = tileOf(w, n);
      if (t) result.samples[n].push(Number(t.currentTime.toFixed(3)));
    }
    await sleep(500);
  }
  const w = await wall();
  for (const [name, tile] of Object.entries((w && w.tiles) || {})) {
    const samples = result.samples[name] || [];
    result.tiles[name] = {
      ...tile,
      advance: samples.length ? Number((samples.at(-1) - samples[0]).toFixed(3)) : null,
    };
  }
  result.labels = await page.evaluate(() => Object.fromEntries(
    [...document.querySelectorAll('#wall figure.tile')].map((f) => [f.dataset.stream, f.querySelector('figcaption').textContent.trim()])));
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });

  // A click opens the stream in the main player.
  const first = args.live[0];
  await page.getByRole('button', { name: `Open ${first} in the player` }).click();
  await waitUntil(result, 30, `the player to play ${first}`, async () => {
    const p = await page.evaluate(() => ({
      stream: window.freshetConsole.stream,
      mode: window.freshetConsole.mode,
      currentTime: document.querySelector('#video').currentTime,
    }));
    result.player = p;
    return p.stream === first && p.mode === 'LIVE' && p.currentTime > 0;
  });

  for (const n of args.live) {
    const t = result.tiles[n];
    if (!t) result.failures.push(`no tile for ${n}`);
    else if (!(t.advance >= args.minAdvance)) result.failures.push(`${n} advanced ${t.advance} s`);
    else if (!(t.videoWidth > 0)) result.failures.push(`${n} shows no picture`);
  }
  for (const n of args.idle) {
    const t = result.tiles[n];
    if (!t || t.status !== 'no-signal') result.failures.push(`${n}: ${JSON.stringify(t)}`);
  }
  if (args.filter) {
    for (const n of Object.keys(result.tiles)) {
      if (!n.includes(args.filter)) result.failures.push(`${n} is shown although it does not match the filter`);
    }
  }
  for (const e of result.pageErrors) result.failures.push(`page error: ${e}`);
  result.ok = result.failures.length === 0;
  await finish(result.ok ? 0 : 1);
}

run().catch((e) => {
  result.failures.push(String(e && e.stack ? e.stack : e));
  finish(1);
});
