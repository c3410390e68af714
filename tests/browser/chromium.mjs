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

  return { finish, launch };
}
