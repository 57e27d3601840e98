/** What a subcommand produced: `main.ts` prints `text`, or `json` as one line under `--json`. */
export interface CommandResult {
  /** The final result as one JSON value (what `--json` prints on stdout). */
  json: unknown;
  /** What a person reads on stdout (tables, the files written). */
  text: string;
}

/** What each file in src/cli/ exports: one subcommand of `sae-eraser`. */
export interface Subcommand {
  /** One line for `sae-eraser --help`. */
  summary: string;
  /** A copy-paste command line for `sae-eraser --help` (runs from a clone with ../shared beside it). */
  example: string;
  /** The full usage text, printed by `--help` and after a usage error. */
  usage: string;
  /** Runs the subcommand on its arguments (after the subcommand's name); throws on failure. Progress goes to stderr. */
  main(argv: string[]): Promise<CommandResult>;
}
