// What the browser scripts share: Debian's Chromium launched headless with
// playwright-core in a fresh profile (with the flags this closed network needs), a
// watchdog that bounds the whole run, and one exit path that closes the browser,
// removes the profile and prints the script's JSON result.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

// A run that prints `result` and exits: `finish(code)` (also called by the watchdog
// after `seconds` + 90 s with 'timed out' added to result.failures), `launch(path,
// viewport)` for the browser context. `beforeExit` runs before the result is printed.
export function browserRun(result, seconds, beforeExit = () => {}) {
  const profile = mkdtempSync(join(tmpdir(), 'freshet-chromium-'));
  let context = null;
  const watchdog = setTimeout(() => {
    result.failures.push('timed out');
    finish(1);
  }, (seconds + 90) * 1000);

  async function finish(code) {
    clearTimeout(watchdog);
    try {
      if (context) await context.close();
    } catch (_) {
      // already gone
    }
    beforeExit();
    rmSync(profile, { recursive: true, force: true });
    process.stdout.write(JSON.stringify(result, null, 1) + '\n');
    process.exit(code);
  }

  async function launch(executablePath, viewport) {
    context = await chromium.launchPersistentContext(profile, {
      executablePath, headless: true, args: ARGS, viewport,
    });
    return context;
  }

  // Launches, opens `url` in the first page, and keeps the page's console errors and
  // uncaught errors in result.consoleErrors and result.pageErrors.
  async function openPage(executablePath, viewport, url) {
    const ctx = await launch(executablePath, viewport);
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on('console', (msg) => {
      if (msg.type() === 'error') result.consoleErrors.push(msg.text());
    });
    page.on('pageerror', (err) => result.pageErrors.push(String(err)));
    await page.goto(url, { waitUntil: 'load' });
    return page;
  }

  return { finish, launch, openPage };
}

// Polls `check` every 200 ms until it is true (true) or `seconds` have passed (false,
// with 'timed out waiting for WHAT' added to result.failures).
export async function waitUntil(result, seconds, what, check) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) {
      result.failures.push(`timed out waiting for ${what}`);
      return false;
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

// The options the scripts share: --seconds N, --min-advance S, --screenshot FILE,
// --chromium PATH (default $CHROMIUM or /usr/bin/chromium), plus `extra` ones
// (`{ '--player': 'player' }`: a flag and the option it sets). Returns the positional
// arguments and the options; throws on an unknown option or a missing value.
export function parseOptions(argv, extra = {}) {
  const positional = [];
  const opts = { seconds: 6, minAdvance: 1, screenshot: null, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  for (const key of Object.values(extra)) opts[key] = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--seconds') opts.seconds = Number(value());
    else if (a === '--min-advance') opts.minAdvance = Number(value());
    else if (a === '--screenshot') opts.screenshot = value();
    else if (a === '--chromium') opts.chromium = value();
    else if (a in extra) opts[extra[a]] = value();
    else if (a.startsWith('--')) throw new Error(`unknown option ${a}`);
    else positional.push(a);
  }
  return { positional, opts };
}

// The script's arguments as `parse` returns them; on an error, its message and exit
// code 2.
export function argsOrExit(parse) {
  try {
    return parse();
  } catch (e) {
    console.error(e.message);
    process.exit(2);
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
