/**
 * The JSON Schema of experiment configs, generated from the zod schema that validates them
 * (src/experiment/config.ts) and shipped as configs/experiment.schema.json, so editors can
 * complete and check configs (`"$schema": "./experiment.schema.json"`). A test checks that the
 * shipped file matches a freshly generated one. Regenerate with `npm run schema`, which builds and
 * runs this file.
 */
import { writeJsonAtomic } from '../io/atomic.js';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { z } from 'zod';
import { projectRoot } from '../io/shared.js';
import { experimentConfigSchema } from './config.js';

/** Where the schema ships, relative to the project root. */
export const CONFIG_SCHEMA_FILE = 'configs/experiment.schema.json';

/** The JSON Schema of what a config file may contain (the schema's input side: defaults are optional). */
export function experimentConfigJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(experimentConfigSchema, { io: 'input' }) as Record<string, unknown>;
}

/** Writes the JSON Schema (default: the shipped file) and returns the path written. */
export function writeConfigSchema(path = join(projectRoot(), CONFIG_SCHEMA_FILE)): string {
  writeJsonAtomic(path, experimentConfigJsonSchema());
  return path;
}

// `node dist/src/experiment/config-schema.js` (npm run schema) regenerates the shipped file.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.stdout.write(`wrote ${writeConfigSchema()}\n`);
}
