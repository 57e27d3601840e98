/** The process-wide thread count (src/util/threads.ts). */
import { afterEach, describe, expect, it } from 'vitest';
import { availableParallelism } from 'node:os';
import { setThreads, threads } from '../../src/util/threads.js';

describe('threads', () => {
  const saved = process.env.SAE_ERASER_THREADS;
  afterEach(() => {
    if (saved === undefined) delete process.env.SAE_ERASER_THREADS;
    else process.env.SAE_ERASER_THREADS = saved;
  });

  it('defaults to the machine’s cores, then SAE_ERASER_THREADS, then setThreads, each over the one before', () => {
    delete process.env.SAE_ERASER_THREADS;
    expect(threads()).toBe(availableParallelism());
    process.env.SAE_ERASER_THREADS = '3';
    expect(threads()).toBe(3);
    setThreads(1);
    expect(threads()).toBe(1);
  });

  it('refuses counts that are not whole numbers from 1 to 1024, naming where they came from', () => {
    expect(() => setThreads('0')).toThrow(/--threads must be a whole number of threads from 1 to 1024, got "0"/);
    expect(() => setThreads(2.5)).toThrow(/threads must be a whole number/);
    expect(() => setThreads('')).toThrow(/got ""/);
  });
});
