/**
 * A report page opened in Debian's Chromium (installed by .ci/run), headless through
 * playwright-core, with every console problem and every request recorded for the tests to check.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Page } from 'playwright-core';

export const CHROMIUM = '/usr/bin/chromium';

/** True when the browser is absent (tests skip through skipWithout, which fails under CI). */
export const chromiumMissing = (): boolean => !existsSync(CHROMIUM);

/** The flags a root, offline, headless run needs (no background networking to a closed network). */
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface OpenedPage {
  page: Page;
  /** Console errors and warnings and uncaught page errors, in order. */
  problems: string[];
  /** Every URL the page requested. */
  requests: string[];
  /** Closes the browser and removes its fresh profile. */
  close(): Promise<void>;
}

/** Opens the HTML file at `path` from file:// in a fresh profile. */
export async function openPage(path: string): Promise<OpenedPage> {
  const profile = mkdtempSync(join(tmpdir(), 'report-chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  });
  const problems: string[] = [];
  const requests: string[] = [];
  try {
    const page = await context.newPage();
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => requests.push(r.url()));
    await page.goto(pathToFileURL(path).href, { waitUntil: 'load' });
    return {
      page,
      problems,
      requests,
      async close() {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    throw err;
  }
}
