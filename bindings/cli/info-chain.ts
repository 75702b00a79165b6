// SPDX-License-Identifier: MIT
// `info --backing-chain`: qemu-img info for the image and then each backing file in turn (human
// blocks separated by a blank line, or one JSON array), each named as qemu-img names it (the
// backing file name joined to the directory of the image naming it).

import { resolve } from 'node:path';
import { openNodeBackend } from '../backends/node.js';
import { probeFormat } from '../qcow2/qcow2-image.js';
import { readQcow2Header } from '../qcow2/qcow2-shadow-update.js';
import { CliError, type CliIo } from './io.js';
import { lastOption, parseArgs } from './args.js';
import { pathCombine } from './files.js';

/** The `info` command without --backing-chain: prints one image's information. */
type InfoCommand = (io: CliIo, args: readonly string[]) => Promise<number>;

/** Deepest chain printed; deeper ones are refused as a probable loop. */
const MAX_CHAIN_DEPTH = 64;

/**
 * Runs `info` with `args`: with --backing-chain, runs `info` for every image of the chain (the
 * options other than -f kept; each backing file with its recorded format); otherwise `info` alone.
 */
export async function infoWithChain(io: CliIo, args: readonly string[], info: InfoCommand): Promise<number> {
  if (!args.includes('--backing-chain')) return info(io, args);
  const rest = args.filter((arg) => arg !== '--backing-chain');
  const parsed = parseArgs(rest, { short: 'hf:U', long: ['help', 'output=', 'force-share'] });
  const json = lastOption(parsed, 'output') === 'json';
  // Every option but the format, for the backing files (which take the format their image records).
  const kept = parsed.options.filter(([name]) => name !== 'f').map(([name, value]) => (name.length > 1 ? `--${name}${value ? `=${value}` : ''}` : `-${name}${value}`));
  // The file is the operand info would take: run it once to validate the options and print the first image.
  const outputs: string[] = [];
  const capture: CliIo = { ...io, stdout: (text) => { outputs.push(text); } };
  const code = await info(capture, rest);
  if (code !== 0) return code;
  let file = parsed.operands[0];
  const seen = new Set<string>();
  for (let depth = 0; ; depth++) {
    const absolute = resolve(io.cwd, file);
    if (seen.has(absolute) || depth >= MAX_CHAIN_DEPTH) throw new CliError(`Backing file chain loop or too deep at '${file}'`);
    seen.add(absolute);
    const backend = await openNodeBackend(absolute, { writable: false });
    let next: { file: string; format?: string } | undefined;
    try {
      if ((await probeFormat(backend)) === 'qcow2') {
        const header = await readQcow2Header(backend);
        if (header.backingFile !== undefined) next = { file: pathCombine(file, header.backingFile), format: header.backingFormat };
      }
    } finally {
      await backend.close();
    }
    if (!next) break;
    const nextCode = await info(capture, [...kept, ...(next.format ? ['-f', next.format] : []), '--', next.file]);
    if (nextCode !== 0) return nextCode;
    file = next.file;
  }
  if (json) io.stdout(`${JSON.stringify(outputs.map((text) => JSON.parse(text) as unknown), null, 4)}\n`);
  else io.stdout(outputs.join('\n'));
  return 0;
}
