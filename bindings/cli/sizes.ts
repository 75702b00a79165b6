// SPDX-License-Identifier: MIT
// Byte counts as qemu-img reads them (suffixes k..E) and prints them ("1.56 MiB").

const SIZE_SUFFIXES: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50, e: 2 ** 60 };

/**
 * A size as qemu-img reads one: a number with an optional fraction and an optional suffix
 * k, M, G, T, P, E (binary, any case; b or none means bytes). Fractions need a unit above
 * bytes. Returns undefined for anything else or a size above 2^53.
 */
export function parseSize(text: string): number | undefined {
  const match = /^(\d+)(?:\.(\d+))?\s*([bkmgtpe]?)$/i.exec(text.trim());
  if (!match) return undefined;
  const unit = SIZE_SUFFIXES[match[3].toLowerCase()];
  if (match[2] !== undefined && unit === 1) return undefined;
  const value = Math.floor(Number(`${match[1]}.${match[2] ?? '0'}`) * unit);
  return Number.isSafeInteger(value) ? value : undefined;
}

/**
 * A byte count for people, as qemu-img prints one: three significant digits and a binary unit,
 * switching to the next unit from 1000 of the current one ("388 KiB", "1.56 MiB", "0 B").
 */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let unit = 0;
  while (unit < units.length - 1 && bytes >= 1000 * 1024 ** unit) unit++;
  const value = Number((bytes / 1024 ** unit).toPrecision(3));
  // C's "%0.3g": at most three significant digits, no trailing zeros; 999.5 .. 999.99 round to 1e+03.
  const text = value >= 1000 ? value.toExponential().replace(/e\+(\d)$/, 'e+0$1') : String(value);
  return `${text} ${units[unit]}`;
}
