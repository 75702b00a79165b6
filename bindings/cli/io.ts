// SPDX-License-Identifier: MIT
// What every command shares: where it prints, the error that ends it with an exit code, and the
// program's name.

/** Where the CLI writes and which directory relative file names start from. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** Directory relative file names resolve against (default: process.cwd()). */
  cwd: string;
}

/** The program's name, as messages and the help text print it. */
export const PROGRAM = 'qcow2-wasm';

/** A failure that ends the command: `message` goes to stderr (prefixed with the program name). */
export class CliError extends Error {
  constructor(message: string, readonly exitCode = 1, readonly hint = false) {
    super(message);
  }
}

/** A failure caused by how the command was called: the message, then a hint to --help. */
export const usageError = (message: string) => new CliError(message, 1, true);

/** The text of an error from the library or the platform. */
export const describe = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/** Prints `text` to stdout; returns exit code 0. */
export function print(io: CliIo, text: string): number {
  io.stdout(text);
  return 0;
}
