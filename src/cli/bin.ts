#!/usr/bin/env node
import { cli } from './main.js';

cli(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`sae-eraser: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  },
);
