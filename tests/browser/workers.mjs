// Watches the console's "Delivery and analytics" panel with a real browser and reports
// what it showed.
//
//   node tests/browser/workers.mjs ENDPOINT EXPECT.json [--seconds N] [--screenshot FILE.png]
//        [--chromium PATH]
//
// EXPECT.json: { "delivery": { NAME: { "status": S, "minDelivered": N, "error": TEXT|null } },
//                "analytics": { NAME: { "status": S, "minRead": N } } }
// Opens ENDPOINT/console in Debian's Chromium (headless, playwright-core) and waits (up
// to N seconds, default 30) until every named delivery stream's row shows that status,
// at least that many records delivered and, when `error` is given, a last error
// containing it (and "–" when it is null); and every named application's row that
// status and at least that many records read. The rows are read from the page's table
// cells, as a person would see them, and from window.freshetWorkers.
//
// Prints one JSON object (the rows' text, window.freshetWorkers, console and page
// errors). Exit code 0 when every check passed; 1 otherwise; 2 on bad arguments.

import { readFileSync } from 'node:fs';
import { browserRun, parseOptions, argsOrExit, sleep } from './chromium.mjs';

const USAGE = 'usage: workers.mjs ENDPOINT EXPECT.json [--seconds N] [--screenshot FILE] [--chromium PATH]';

const args = argsOrExit(() => {
  const { positional, opts } = parseOptions(process.argv.slice(2));
  const [endpoint, expectFile] = positional;
  if (!endpoint || !expectFile) throw new Error(USAGE);
  return { endpoint: endpoint.replace(/\/+$/, ''), expect: JSON.parse(readFileSync(expectFile, 'utf8')), ...opts,
    seconds: opts.seconds === 6 ? 30 : opts.seconds };
});

const result = { ok: false, failures: [], rows: {}, workers: null, consoleErrors: [], pageErrors: [] };
const { finish, openPage } = browserRun(result, args.seconds);

// The text of each cell of each row of a table, by the row's data-name.
function readRows(page, table) {
  return page.evaluate((t) => Object.fromEntries([...document.querySelectorAll(`${t} tbody tr[data-name]`)]
    .map((tr) => [tr.dataset.name, Object.fromEntries([...tr.children].map((td) => [td.className, td.textContent]))])), table);
}

const number = (text) => {
  const m = /^([0-9.]+)\s*(k|M)?/.exec(text || '');
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === 'M' ? 1e6 : m[2] === 'k' ? 1e3 : 1);
};

function unmet(rows) {
  const out = [];
  for (const [name, want] of Object.entries(args.expect.delivery || {})) {
    const r = rows.delivery[name];
    if (!r) { out.push(`delivery stream ${name} not listed`); continue; }
    if (r.state !== want.status) out.push(`${name}: status ${r.state}, want ${want.status}`);
    if (!(number(r.delivered) >= (want.minDelivered || 0))) out.push(`${name}: delivered ${r.delivered}`);
    if (want.error === null && r.error !== '–') out.push(`${name}: unexpected error ${r.error}`);
    if (want.error && !(r.error || '').includes(want.error)) out.push(`${name}: error ${r.error}, want ${want.error}`);
  }
  for (const [name, want] of Object.entries(args.expect.analytics || {})) {
    const r = rows.analytics[name];
    if (!r) { out.push(`application ${name} not listed`); continue; }
    if (r.state !== want.status) out.push(`${name}: status ${r.state}, want ${want.status}`);
    if (!(number(r.read) >= (want.minRead || 0))) out.push(`${name}: records read ${r.read}`);
  }
  return out;
}

try {
  const page = await openPage(args.chromium, { width: 1400, height: 1200 }, `${args.endpoint}/console`);
  const deadline = Date.now() + args.seconds * 1000;
  let missing;
  for (;;) {
    result.rows = { delivery: await readRows(page, '#delivery-streams'), analytics: await readRows(page, '#analytics-apps') };
    missing = unmet(result.rows);
    if (!missing.length || Date.now() > deadline) break;
    await sleep(250);
  }
  result.failures.push(...missing);
  result.workers = await page.evaluate(() => window.freshetWorkers);
  result.statusLine = await page.locator('#workers-status').textContent();
  await page.locator('#workers-panel').scrollIntoViewIfNeeded();
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
  if (result.pageErrors.length) result.failures.push('page errors');
  if (result.consoleErrors.length) result.failures.push('console errors');
  result.ok = result.failures.length === 0;
  await finish(result.ok ? 0 : 1);
} catch (e) {
  result.failures.push(String(e && e.stack ? e.stack : e));
  await finish(1);
}
