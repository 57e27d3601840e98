/** What each file in src/cli/ exports: one subcommand of `sae-eraser`. */
export interface Subcommand {
  /** One line for `sae-eraser --help`. */
  summary: string;
  /** The full usage text, printed by `--help` and after a usage error. */
  usage: string;
  /** Runs the subcommand on its arguments (after the subcommand's name); throws on failure. */
  main(argv: string[]): Promise<void>;
}
