// SPDX-License-Identifier: MIT
// The `-o help` lists of create and amend, in qemu-img's layout, naming the options this
// package implements (qemu-img lists more: encryption, external data files, preallocation modes).

/** [name, type, description] as qemu-img describes each option. */
type OptionLine = readonly [string, string, string];

const CREATE_QCOW2: readonly OptionLine[] = [
  ['backing_file', 'str', 'File name of a base image'],
  ['backing_fmt', 'str', 'Image format of the base image'],
  ['cluster_size', 'size', 'qcow2 cluster size'],
  ['compat', 'str', 'Compatibility level (v2 [0.10] or v3 [1.1])'],
  ['compression_type', 'str', 'Compression method used for image cluster compression'],
  ['extended_l2', 'bool (on/off)', 'Extended L2 tables'],
  ['lazy_refcounts', 'bool (on/off)', 'Postpone refcount updates'],
  ['preallocation', 'str', 'Preallocation mode (allowed values: off, metadata)'],
  ['refcount_bits', 'num', 'Width of a reference count entry in bits'],
  ['size', 'size', 'Virtual disk size'],
];
const CREATE_RAW: readonly OptionLine[] = [['size', 'size', 'Virtual disk size']];
const AMEND_QCOW2: readonly OptionLine[] = [
  ['compat', 'str', 'Compatibility level (v2 [0.10] or v3 [1.1])'],
  ['lazy_refcounts', 'bool (on/off)', 'Postpone refcount updates'],
  ['refcount_bits', 'num', 'Width of a reference count entry in bits'],
  ['size', 'size', 'Virtual disk size'],
];

// qemu_opts_print_help: "  name=<type>" padded to 24 columns, then " - description".
const optionLines = (options: readonly OptionLine[]) =>
  options.map(([name, type, text]) => `  ${`${name}=<${type}>`.padEnd(22)} - ${text}\n`).join('');

/** What `create -f fmt -o help` prints. */
export function createOptionsHelp(format: 'qcow2' | 'raw'): string {
  return `Supported ${format} options:\n${optionLines(format === 'qcow2' ? CREATE_QCOW2 : CREATE_RAW)}\n` +
    'The protocol level may support further options.\nSpecify the target filename to include those options.\n';
}

/** What `amend -o help` prints for a qcow2 image. */
export function amendOptionsHelp(): string {
  return `Amend options for 'qcow2':\n${optionLines(AMEND_QCOW2)}`;
}

/** True when a comma-separated `-o` list asks for help ("help" or "?"). */
export function asksForHelp(list: string): boolean {
  return list.split(',').some((item) => item === 'help' || item === '?');
}
