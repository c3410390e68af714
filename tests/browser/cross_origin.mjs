// A web page on another origin than Freshet, as a user's own site would be: it plays a
// Freshet HLS session URL with hls.js and calls the Kinesis API with fetch (a request
// that needs a CORS preflight: X-Amz-Target and an AWS JSON content type).
//
//   node tests/browser/cross_origin.mjs PAGE_PORT FRESHET_ENDPOINT HLS_URL
//        [--seconds N] [--min-advance S] [--screenshot FILE.png] [--chromium PATH]
//
// The page is served by this script on http://127.0.0.1:PAGE_PORT/ (a different origin
// from FRESHET_ENDPOINT: another port). It loads hls.js from Freshet's console (scripts
// load cross-origin without CORS), plays HLS_URL, samples video.currentTime every
// 0.5 s for N seconds (default 6; stops early once the video ended), then POSTs
// ListStreams to FRESHET_ENDPOINT.
//
// Prints one JSON object: samples, advance, ended, hls.js errors, the API call's
// outcome (`api`: {ok, status, error}), console errors. Exit code 0 when it ran to the
// end (whatever the outcome: the caller judges), 1 when the browser run itself failed,
// 2 on bad arguments.

import { createServer } from 'node:http';
import { browserRun, parseOptions, argsOrExit, sleep } from './chromium.mjs';

const USAGE = 'usage: cross_origin.mjs PAGE_PORT FRESHET_ENDPOINT HLS_URL [--seconds N] ' +
  '[--min-advance S] [--screenshot FILE] [--chromium PATH]';

function parseArgs(argv) {
  const { positional, opts } = parseOptions(argv);
  const [port, endpoint, hlsUrl] = positional;
  if (!Number.isInteger(Number(port)) || !endpoint || !hlsUrl || !(opts.seconds > 0)) throw new Error(USAGE);
  return { port: Number(port), endpoint: endpoint.replace(/\/+$/, ''), hlsUrl, ...opts };
}

const args = argsOrExit(() => parseArgs(process.argv.slice(2)));

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>A site that embeds Freshet video</title>
<script src="${args.endpoint}/console/vendor/hls.min.js"></script></head>
<body><h1>Camera</h1><video id="video" muted playsinline width="640"></video>
<script>
  window.hlsErrors = [];
  const video = document.getElementById('video');
  const hls = new Hls();
  hls.on(Hls.Events.ERROR, (_, d) => window.hlsErrors.push({ type: d.type, details: d.details, fatal: d.fatal }));
  hls.loadSource(${JSON.stringify(args.hlsUrl)});
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch((e) => window.hlsErrors.push({ play: String(e) })));
  window.callApi = async () => {
    try {
      const r = await fetch(${JSON.stringify(args.endpoint + '/')}, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-amz-json-1.1', 'X-Amz-Target': 'Kinesis_20131202.ListStreams' },
        body: '{}',
      });
      const text = await r.text();
      return { ok: r.ok, status: r.status, requestId: r.headers.get('x-amzn-RequestId'), body: text.slice(0, 200) };
    } catch (e) {
      return { ok: false, status: null, error: String(e) };
    }
  };
</script></body></html>`;

const server = createServer((req, res) => {
  if (req.url === '/' || req.url.startsWith('/?')) {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(PAGE);
  } else {
    res.writeHead(404);
    res.end();
  }
});

const result = {
  page: `http://127.0.0.1:${args.port}/`,
  samples: [], advance: null, ended: false, hlsErrors: [], api: null,
  consoleErrors: [], pageErrors: [], failures: [],
};
const { finish, launch } = browserRun(result, args.seconds, () => server.close());

async function run() {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(args.port, '127.0.0.1', resolve);
  });
  const context = await launch(args.chromium, { width: 800, height: 600 });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() === 'error') result.consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => result.pageErrors.push(String(err)));
  await page.goto(result.page, { waitUntil: 'load' });

  const started = Date.now();
  let first = null;
  while (Date.now() - started < (args.seconds + 20) * 1000) {
    const s = await page.evaluate(() => {
      const v = document.getElementById('video');
      return { t: v.currentTime, ended: v.ended, paused: v.paused, error: v.error ? v.error.code : null };
    });
    result.samples.push(s);
    if (first === null && s.t > 0) first = Date.now();
    if (s.ended || s.error || (first !== null && Date.now() - first > args.seconds * 1000)) break;
    if (first === null && (await page.evaluate(() => window.hlsErrors.some((e) => e.fatal)))) break;
    await sleep(500);
  }
  const times = result.samples.map((s) => s.t);
  result.advance = times.length ? Math.max(...times) - times[0] : null;
  result.ended = result.samples.some((s) => s.ended);
  result.hlsErrors = await page.evaluate(() => window.hlsErrors);
  result.api = await page.evaluate(() => window.callApi());
  if (args.screenshot) await page.screenshot({ path: args.screenshot });
  await finish(0);
}

run().catch((e) => {
  result.failures.push(String(e && e.stack ? e.stack : e));
  finish(1);
});
