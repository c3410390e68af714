// Uses the console's timeline of one video stream with a real browser, as a person
// would, and reports what happened.
//
//   node tests/browser/timeline.mjs ENDPOINT STREAM FRAGMENTS CLIP.mp4 [--seconds N]
//        [--screenshot FILE.png] [--chromium PATH]
//
// Opens ENDPOINT/console in Debian's Chromium (headless, playwright-core), presses the
// stream's "Timeline" button (pressing "Refresh" until the stream is listed), and waits
// until the timeline has drawn FRAGMENTS fragments. Then it clicks the middle of the
// bar and waits until the player plays (LIVE_REPLAY, `video.currentTime` advancing by
// half a second from the clicked time), and presses "Export MP4" with the range the
// timeline filled in, saving the download as CLIP.mp4.
//
// Prints one JSON object (window.freshetTimeline, the player's state, the download's
// name and size, console and page errors). Exit code 0 when every check passed; 1
// otherwise; 2 on bad arguments.

import { browserRun, parseOptions, waitUntil, argsOrExit } from './chromium.mjs';

const USAGE = 'usage: timeline.mjs ENDPOINT STREAM FRAGMENTS CLIP.mp4 [--seconds N] [--screenshot FILE] [--chromium PATH]';

const args = argsOrExit(() => {
  const { positional, opts } = parseOptions(process.argv.slice(2));
  const [endpoint, stream, fragments, clip] = positional;
  if (!endpoint || !stream || !(Number(fragments) > 0) || !clip) throw new Error(USAGE);
  return { endpoint: endpoint.replace(/\/+$/, ''), stream, fragments: Number(fragments), clip, ...opts,
    seconds: opts.seconds === 6 ? 30 : opts.seconds };
});

const result = {
  ok: false, failures: [], timeline: null, player: null, download: null, consoleErrors: [], pageErrors: [],
};
const { finish, openPage } = browserRun(result, args.seconds);

const waitFor = (what, check) => waitUntil(result, args.seconds, what, check);

try {
  const page = await openPage(args.chromium, { width: 1400, height: 1100 }, `${args.endpoint}/console`);
  const button = page.getByRole('button', { name: `Timeline ${args.stream}`, exact: true });
  const listed = await waitFor('the stream to be listed', async () => {
    if (await button.count()) return true;
    await page.getByRole('button', { name: 'Refresh' }).click();
    return false;
  });
  if (listed) {
    await button.click();
    const drawn = await waitFor(`${args.fragments} fragments on the timeline`, () =>
      page.evaluate((n) => window.freshetTimeline.fragments === n
        && document.querySelector('#timeline').dataset.fragments === String(n), args.fragments));
    if (drawn) {
      // Scrolled into view first (the page may list many streams above it); the click
      // lands in the middle of the bar.
      await page.locator('#timeline').click();
      const clicked = await page.evaluate(() => window.freshetTimeline.clicked);
      let first = null;
      await waitFor('the player to play from the clicked time', () => page.evaluate(() => {
        const v = document.querySelector('#video');
        const c = window.freshetConsole;
        return { mode: c.mode, stream: c.stream, t: v.currentTime, paused: v.paused, errors: c.hlsErrors.length };
      }).then((p) => {
        result.player = p;
        if (p.mode !== 'LIVE_REPLAY' || p.stream !== args.stream) return false;
        if (first === null && p.t > 0) first = p.t;
        return first !== null && p.t >= first + 0.5;
      }));
      result.player.clicked = clicked;
      const [download] = await Promise.all([
        page.waitForEvent('download', { timeout: args.seconds * 1000 }),
        page.getByRole('button', { name: 'Export MP4' }).click(),
      ]);
      await download.saveAs(args.clip);
      result.download = { suggested: download.suggestedFilename(), path: args.clip };
    }
  }
  result.timeline = await page.evaluate(() => ({ ...window.freshetTimeline, spans: undefined }));
  result.statusLine = await page.locator('#timeline-status').textContent();
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  if (result.pageErrors.length) result.failures.push('page errors');
  if (result.consoleErrors.length) result.failures.push('console errors');
  result.ok = result.failures.length === 0;
  await finish(result.ok ? 0 : 1);
} catch (e) {
  result.failures.push(String(e && e.stack ? e.stack : e));
  await finish(1);
}
