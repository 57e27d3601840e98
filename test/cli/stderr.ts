/** Runs a CLI call with stdout and stderr captured instead of printed: its exit code and what it wrote to each. */
export async function quietly(f: () => Promise<number>): Promise<{ code: number; stderr: string; stdout: string }> {
  const err: string[] = [];
  const out: string[] = [];
  const writeErr = process.stderr.write.bind(process.stderr);
  const writeOut = process.stdout.write.bind(process.stdout);
  process.stderr.write = ((c: string) => (err.push(String(c)), true)) as typeof process.stderr.write;
  process.stdout.write = ((c: string) => (out.push(String(c)), true)) as typeof process.stdout.write;
  try {
    return { code: await f(), stderr: err.join(''), stdout: out.join('') };
  } finally {
    process.stderr.write = writeErr;
    process.stdout.write = writeOut;
  }
}
