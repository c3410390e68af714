// Watches a data stream in the web console with a real browser while records are put
// into it, and reports what the page showed.
//
//   node tests/browser/data.mjs ENDPOINT STREAM MARKER [--seconds N] [--screenshot FILE.png]
//        [--chromium PATH]
//
// Opens ENDPOINT/console in Debian's Chromium (headless, playwright-core), finds the
// stream's row in "Data streams" (pressing "Update list" until it is listed), presses
// its "Tail", then waits (up to N seconds, default 30) until: the page's records/s
// figure for the stream is above zero after at least two /metrics polls, the chart has
// points, and the tail shows a record whose text contains MARKER pretty-printed as JSON.
// Then it types MARKER into the filter and checks that only matching records stay
// visible, and an unmatched filter hides them all.
//
// Prints one JSON object (what window.freshetData held, the rate cell's text, the first
// record shown, console and page errors). Exit code 0 when every check passed; 1
// otherwise; 2 on bad arguments. The records are put by the caller meanwhile.

import { browserRun, parseOptions, argsOrExit, sleep } from './chromium.mjs';

const USAGE = 'usage: data.mjs ENDPOINT STREAM MARKER [--seconds N] [--screenshot FILE] [--chromium PATH]';

const args = argsOrExit(() => {
  const { positional, opts } = parseOptions(process.argv.slice(2));
  const [endpoint, stream, marker] = positional;
  if (!endpoint || !stream || !marker) throw new Error(USAGE);
  return { endpoint: endpoint.replace(/\/+$/, ''), stream, marker, ...opts, seconds: opts.seconds === 6 ? 30 : opts.seconds };
});

const result = {
  ok: false,
  failures: [],
  stream: args.stream,
  data: null,
  rateText: null,
  firstRecord: null,
  chartPoints: null,
  filtered: null,
  consoleErrors: [],
  pageErrors: [],
};
const { finish, openPage } = browserRun(result, args.seconds);

async function waitFor(page, what, check) {
  const deadline = Date.now() + args.seconds * 1000;
  for (;;) {
    const ok = await check();
    if (ok) return true;
    if (Date.now() > deadline) {
      result.failures.push(`timed out waiting for ${what}`);
      result.data = await page.evaluate(() => window.freshetData);
      return false;
    }
    await sleep(200);
  }
}

try {
  const page = await openPage(args.chromium, { width: 1280, height: 1000 }, `${args.endpoint}/console`);

  const row = page.locator(`#data-streams tr.data-stream[data-stream=${JSON.stringify(args.stream)}]`);
  const listed = await waitFor(page, 'the stream to be listed', async () => {
    if (await row.count()) return true;
    await page.getByRole('button', { name: 'Update list' }).click();
    return false;
  });
  if (listed) {
    await row.getByRole('button', { name: `Tail ${args.stream}` }).click();
    const tailed = await waitFor(page, 'a record with the marker in the tail', () =>
      page.evaluate((marker) => [...document.querySelectorAll('#tail li.record pre.json')]
        .some((pre) => pre.textContent.includes(marker)), args.marker));
    const rated = await waitFor(page, 'a records/s figure above zero', () =>
      page.evaluate((stream) => {
        const d = window.freshetData;
        return d.samples >= 2 && (d.rates[stream] || 0) > 0;
      }, args.stream));
    result.rateText = await row.locator('td.rate').textContent();
    result.chartPoints = Number(await page.locator('#rate-chart').getAttribute('data-points'));
    result.firstRecord = await page.locator('#tail li.record').first().textContent();
    if (tailed && rated) {
      if (!(result.chartPoints > 0)) result.failures.push('the chart has no points');
      if (!/[0-9]/.test(result.rateText || '')) result.failures.push(`rate cell shows ${result.rateText}`);
      // The filter: the marker keeps the marked records, nonsense hides everything.
      const search = page.getByRole('searchbox', { name: 'Filter records' });
      await search.fill(args.marker);
      const kept = await page.evaluate((marker) => {
        const items = [...document.querySelectorAll('#tail li.record')];
        return {
          visible: items.filter((i) => !i.hidden).length,
          visibleWithout: items.filter((i) => !i.hidden && !i.textContent.includes(marker)).length,
        };
      }, args.marker);
      await search.fill('no record contains this 7f3c');
      const none = await page.evaluate(() => [...document.querySelectorAll('#tail li.record')].filter((i) => !i.hidden).length);
      result.filtered = { ...kept, visibleForNonsense: none };
      if (!(kept.visible > 0) || kept.visibleWithout !== 0 || none !== 0) {
        result.failures.push(`filter did not work: ${JSON.stringify(result.filtered)}`);
      }
      await search.fill('');
    }
  }
  result.data = await page.evaluate(() => window.freshetData);
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  if (result.pageErrors.length) result.failures.push('page errors');
  if (result.consoleErrors.length) result.failures.push('console errors');
  result.ok = result.failures.length === 0;
  await finish(result.ok ? 0 : 1);
} catch (e) {
  result.failures.push(String(e && e.stack ? e.stack : e));
  await finish(1);
}
