/** Runs a CLI call with stderr captured instead of printed: its exit code and what it wrote there. */
export async function quietly(f: () => Promise<number>): Promise<{ code: number; stderr: string }> {
  const chunks: string[] = [];
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((c: string) => (chunks.push(String(c)), true)) as typeof process.stderr.write;
  try {
    return { code: await f(), stderr: chunks.join('') };
  } finally {
    process.stderr.write = write;
  }
}
