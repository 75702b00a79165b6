// SPDX-License-Identifier: MIT
// `qcow2-wasm snapshot -l | -a | -c | -d`: qemu-img snapshot's options, output and messages.

import { probeFormat } from '../qcow2/qcow2-image.js';
import { listSnapshots } from '../qcow2/qcow2-snapshots.js';
import { applySnapshot, createSnapshot, deleteSnapshot, SnapshotNotFoundError } from '../qcow2/qcow2-snapshot-ops.js';
import { readQcow2Header } from '../qcow2/qcow2-shadow-update.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, parseArgs } from './args.js';
import { snapshotLines } from './info.js';
import { openFileBackend } from './files.js';

// Where the other commands have imported it from.

type Action = 'l' | 'a' | 'c' | 'd';

/** What qemu-img prints before writing to a raw image whose format it guessed. */
export const PROBED_RAW_WARNING = (file: string) => `WARNING: Image format was not specified for '${file}' and probing guessed raw.
         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.
         Specify the 'raw' format explicitly to remove the restrictions.
`;

/** Runs `snapshot` with `args`; returns the exit code (0, or 1 with a message on stderr). */
export async function snapshotCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'la:c:d:hqU', long: ['help', 'force-share', 'object=', 'image-opts'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  if (hasOption(p, 'object') || hasOption(p, 'image-opts')) throw new CliError('--object and --image-opts are not supported');
  const actions = p.options.filter(([n]) => n === 'l' || n === 'a' || n === 'c' || n === 'd') as [Action, string][];
  if (new Set(actions.map(([n]) => n)).size > 1 || actions.length > 1) throw usageError("Cannot mix '-l', '-a', '-c', '-d'");
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const [action, name] = actions[0] ?? [undefined, ''];
  if (action === undefined) return 0;
  const backend = await openFileBackend(io, file, action !== 'l');
  try {
    const format = await probeFormat(backend);
    // qemu-img warns once per open; apply opens twice.
    if (format === 'raw' && action !== 'l') io.stderr(PROBED_RAW_WARNING(file).repeat(action === 'a' ? 2 : 1));
    switch (action) {
      case 'l': {
        if (format === 'raw') return 0;
        const snapshots = await listSnapshots(backend, await readQcow2Header(backend));
        if (snapshots.length > 0) io.stdout(`${snapshotLines(snapshots).join('\n')}\n`);
        return 0;
      }
      case 'c':
        if (format === 'raw') throw new CliError(`Could not create snapshot '${name}': -95 (Operation not supported)`);
        await run(() => createSnapshot(backend, name), `Could not create snapshot '${name}'`);
        return 0;
      case 'a':
        if (format === 'raw') throw new CliError(`Could not apply snapshot '${name}': Block driver does not support snapshots`);
        await run(() => applySnapshot(backend, name), `Could not apply snapshot '${name}'`,
          'Failed to load snapshot: No such file or directory');
        return 0;
      case 'd':
        await run(() => (format === 'raw' ? Promise.reject(new SnapshotNotFoundError(name)) : deleteSnapshot(backend, name)),
          `Could not delete snapshot '${name}'`, 'snapshot not found');
        return 0;
    }
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  } finally {
    await backend.close();
  }
}

// Runs a snapshot operation; a failure becomes `what: reason` (qemu-img's reason for a missing snapshot).
async function run(operation: () => Promise<unknown>, what: string, notFound = 'snapshot not found'): Promise<void> {
  try {
    await operation();
  } catch (error) {
    throw new CliError(`${what}: ${error instanceof SnapshotNotFoundError ? notFound : describe(error)}`);
  }
}
