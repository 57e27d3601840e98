/**
 * Letting the event loop run inside long compute loops. A tfjs step is synchronous, and `await` on
 * an already-settled promise only drains microtasks, so a loop of them can hold the event loop for
 * minutes: timers, I/O, signal handlers and a test runner's messages all wait. Loops call
 * `breather.maybe()` once per step; it yields a macrotask at most every `everyMs` milliseconds.
 */
export class Breather {
  private last = Date.now();

  /**
   * @param everyMs Longest stretch without yielding, in milliseconds.
   */
  constructor(private readonly everyMs = 250) {}

  /** Yields to the event loop when `everyMs` have passed since the last yield. */
  async maybe(): Promise<void> {
    if (Date.now() - this.last < this.everyMs) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.last = Date.now();
  }
}
