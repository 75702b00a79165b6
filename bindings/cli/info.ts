// SPDX-License-Identifier: MIT
// `qcow2-wasm info [-f fmt] [--output=ofmt] [-U] filename`: qemu-img info's fields, human and JSON,
// from the header and snapshot table alone (no tables, no backing file opened).

import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import { openNodeBackend } from '../backends/node.js';
import { probeFormat } from '../qcow2/qcow2-image.js';
import type { Qcow2Header } from '../qcow2/qcow2-header.js';
import { listSnapshots, type Qcow2Snapshot } from '../qcow2/qcow2-snapshots.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, outputFormat, parseArgs } from './args.js';
import { formatSize } from './sizes.js';
import { pathCombine, readHeader } from './files.js';

/** qemu-img info's fields, in the order qemu-img 7.2 prints them as JSON. */
function infoJson(file: string, format: 'qcow2' | 'raw', virtualSize: number, actualSize: number, header?: Qcow2Header,
                  snapshots: readonly Qcow2Snapshot[] = []): object {
  if (!header) return { 'virtual-size': virtualSize, filename: file, format, 'actual-size': actualSize, 'dirty-flag': false };
  const info: Record<string, unknown> = {};
  if (header.backingFile !== undefined && header.backingFormat !== undefined) info['backing-filename-format'] = header.backingFormat;
  if (snapshots.length > 0) info.snapshots = snapshots.map(snapshotJson);
  Object.assign(info, {
    'virtual-size': virtualSize, filename: file, 'cluster-size': header.clusterSize, format, 'actual-size': actualSize,
    'format-specific': { type: 'qcow2', data: formatSpecific(header) },
  });
  if (header.backingFile !== undefined) {
    info['full-backing-filename'] = pathCombine(file, header.backingFile);
    info['backing-filename'] = header.backingFile;
  }
  info['dirty-flag'] = header.flags.dirty;
  return info;
}

/** One snapshot as qemu-img info --output=json prints it (its key order). */
function snapshotJson(snapshot: Qcow2Snapshot): Record<string, unknown> {
  const json: Record<string, unknown> = {};
  if (snapshot.icount !== undefined) json.icount = snapshot.icount;
  Object.assign(json, {
    'vm-clock-nsec': snapshot.vmClockNanoseconds % 1e9, name: snapshot.name, 'date-sec': snapshot.dateSeconds,
    'date-nsec': snapshot.dateNanoseconds, 'vm-clock-sec': Math.floor(snapshot.vmClockNanoseconds / 1e9), id: snapshot.id,
    'vm-state-size': snapshot.vmStateBytes,
  });
  return json;
}

/** qemu-img info's "Snapshot list:" table (dates in local time, as qemu-img prints them). */
export function snapshotLines(snapshots: readonly Qcow2Snapshot[]): string[] {
  const two = (n: number) => String(n).padStart(2, '0');
  const lines = ['Snapshot list:', `${'ID'.padEnd(10)}${'TAG'.padEnd(17)}${'VM SIZE'.padStart(8)}${'DATE'.padStart(20)}${'VM CLOCK'.padStart(13)}${'ICOUNT'.padStart(11)}`];
  for (const s of snapshots) {
    const d = new Date(s.dateSeconds * 1000);
    const date = `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
    const clockMs = Math.floor(s.vmClockNanoseconds / 1e6);
    const clock = `${two(Math.floor(clockMs / 3_600_000))}:${two(Math.floor(clockMs / 60_000) % 60)}:${two(Math.floor(clockMs / 1000) % 60)}.${String(clockMs % 1000).padStart(3, '0')}`;
    lines.push(`${s.id.padEnd(9)} ${s.name.padEnd(16)} ${formatSize(s.vmStateBytes).padStart(8)} ${date.padStart(19)} ${clock.padStart(12)} ${(s.icount === undefined ? '' : String(s.icount)).padStart(10)}`);
  }
  return lines;
}

function formatSpecific(header: Qcow2Header): Record<string, unknown> {
  const data: Record<string, unknown> = { compat: header.version === 2 ? '0.10' : '1.1', 'compression-type': header.compressionType };
  if (header.version === 2) return { ...data, 'refcount-bits': 2 ** header.refcountOrder };
  data['lazy-refcounts'] = header.flags.lazyRefcounts;
  data['refcount-bits'] = 2 ** header.refcountOrder;
  if (header.flags.externalDataFile) {
    if (header.dataFile !== undefined) data['data-file'] = header.dataFile;
    data['data-file-raw'] = header.flags.dataFileRaw;
  }
  data.corrupt = header.flags.corrupt;
  data['extended-l2'] = header.flags.extendedL2;
  return data;
}

function infoHuman(file: string, format: 'qcow2' | 'raw', virtualSize: number, actualSize: number, header?: Qcow2Header,
                   snapshots: readonly Qcow2Snapshot[] = []): string {
  const lines = [`image: ${file}`, `file format: ${format}`, `virtual size: ${formatSize(virtualSize)} (${virtualSize} bytes)`,
    `disk size: ${formatSize(actualSize)}`];
  if (header) {
    lines.push(`cluster_size: ${header.clusterSize}`);
    if (header.backingFile !== undefined) {
      const full = pathCombine(file, header.backingFile);
      lines.push(`backing file: ${header.backingFile}${full !== header.backingFile ? ` (actual path: ${full})` : ''}`);
      if (header.backingFormat !== undefined) lines.push(`backing file format: ${header.backingFormat}`);
    }
    if (snapshots.length > 0) lines.push(...snapshotLines(snapshots));
    lines.push('Format specific information:');
    for (const [key, value] of Object.entries(formatSpecific(header))) lines.push(`    ${key.replace(/-/g, ' ')}: ${String(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** Runs `info` (one image) with `args`; returns the exit code. */
export async function infoCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:U', long: ['help', 'output=', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const output = outputFormat(p);
  const forced = imageFormat(lastOption(p, 'f'));
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  const path = resolve(io.cwd, file);
  let backend: Backend;
  try {
    backend = await openNodeBackend(path, { writable: false });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  let format: 'qcow2' | 'raw';
  let header: Qcow2Header | undefined;
  let snapshots: Qcow2Snapshot[] = [];
  let virtualSize: number;
  try {
    format = forced ?? (await probeFormat(backend));
    if (format === 'qcow2') {
      header = await readHeader(backend);
      snapshots = await listSnapshots(backend, header);
      virtualSize = header.virtualSize;
    } else {
      virtualSize = await backend.getSize();
    }
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  } finally {
    await backend.close();
  }
  const actualSize = (await stat(path)).blocks * 512;
  if (output === 'json') io.stdout(`${JSON.stringify(infoJson(file, format, virtualSize, actualSize, header, snapshots), null, 4)}\n`);
  else io.stdout(infoHuman(file, format, virtualSize, actualSize, header, snapshots));
  return 0;
}
