// SPDX-License-Identifier: MIT
// `qcow2-wasm check [-f fmt] [--output=ofmt] [-r leaks | -r all] [-q] [-U] filename`: qemu-img
// check's summary, JSON and exit codes, over checkQcow2.

import { resolve } from 'node:path';
import type { Backend } from '../backends/backend.js';
import { openNodeBackend } from '../backends/node.js';
import { probeFormat } from '../qcow2/qcow2-image.js';
import { checkQcow2, checkExitCode, qemuCheckJson, type Qcow2CheckReport } from '../qcow2/qcow2-check.js';
import { help } from './main.js';
import { CliError, describe, usageError, type CliIo } from './io.js';
import { hasOption, imageFormat, lastOption, outputFormat, parseArgs } from './args.js';

/** The report's summary worded as qemu-img check prints it on stdout (findings go to stderr). */
function checkHuman(report: Qcow2CheckReport): string {
  const lines: string[] = [];
  if (report.corruptionsFixed + report.leaksFixed > 0) {
    lines.push('The following inconsistencies were found and repaired:', '',
      `    ${report.leaksFixed} leaked clusters`, `    ${report.corruptionsFixed} corruptions`, '');
  }
  if (report.corruptions > 0) {
    lines.push('', `${report.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (report.leaks > 0) {
    lines.push('', `${report.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
  }
  if (report.checkErrors > 0) lines.push('', `${report.checkErrors} internal errors have occurred during the check.`);
  if (report.corruptions + report.leaks + report.checkErrors === 0) lines.push('No errors were found on the image.');
  // printf("%.2f") rounds exact halves to even (3.125 -> 3.12); toFixed rounds them up.
  const percent = (part: number, whole: number) => {
    const hundredths = whole === 0 ? 0 : (part * 10000) / whole;
    let rounded = Math.round(hundredths);
    if (hundredths - Math.floor(hundredths) === 0.5 && rounded % 2 !== 0) rounded -= 1;
    return (rounded / 100).toFixed(2);
  };
  if (report.totalClusters > 0 && report.allocatedClusters > 0) {
    lines.push(`${report.allocatedClusters}/${report.totalClusters} = ${percent(report.allocatedClusters, report.totalClusters)}% allocated, ` +
      `${percent(report.fragmentedClusters, report.allocatedClusters)}% fragmented, ${percent(report.compressedClusters, report.allocatedClusters)}% compressed clusters`);
  }
  if (report.imageEndOffset > 0) lines.push(`Image end offset: ${report.imageEndOffset}`);
  return `${lines.join('\n')}\n`;
}

/** Runs `check` with `args`; returns qemu-img check's exit code. */
export async function checkCommand(io: CliIo, args: readonly string[]): Promise<number> {
  const p = parseArgs(args, { short: 'hf:qr:U', long: ['help', 'output=', 'force-share'] });
  if (hasOption(p, 'h') || hasOption(p, 'help')) return help(io);
  const output = outputFormat(p);
  const repairOption = lastOption(p, 'r');
  if (repairOption !== undefined && repairOption !== 'leaks' && repairOption !== 'all') {
    throw usageError(`Unknown option value for -r (expecting 'leaks' or 'all'): ${repairOption}`);
  }
  if (p.operands.length !== 1) throw usageError('Expecting one image file name');
  const file = p.operands[0];
  let backend: Backend;
  try {
    backend = await openNodeBackend(resolve(io.cwd, file), { writable: repairOption !== undefined });
  } catch (error) {
    throw new CliError(`Could not open '${file}': ${describe(error)}`);
  }
  try {
    if ((imageFormat(lastOption(p, 'f')) ?? (await probeFormat(backend))) !== 'qcow2') {
      throw new CliError(`This image format does not support checks`, 63);
    }
    const report = await checkQcow2(backend, repairOption === undefined ? {} : { repair: repairOption });
    if (output === 'json') io.stdout(`${JSON.stringify(qemuCheckJson(report, file), null, 4)}\n`);
    else if (!hasOption(p, 'q')) {
      if (report.messages.length > 0) io.stderr(`${report.messages.join('\n')}\n`);
      io.stdout(checkHuman(report));
    }
    return checkExitCode(report);
  } catch (error) {
    if (error instanceof CliError) throw error;
    throw new CliError(`Check failed: ${describe(error)}`);
  } finally {
    await backend.close();
  }
}
