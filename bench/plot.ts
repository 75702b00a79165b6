// SPDX-License-Identifier: MIT
// A horizontal bar chart as a standalone SVG document, for benchmark figures in the README.

/** One bar: its label and its value (drawn to scale against the largest). */
export interface Bar { label: string; value: number }

const ROW_HEIGHT = 26;
const LABEL_WIDTH = 170;
const BAR_WIDTH = 420;
const VALUE_WIDTH = 70;
const TITLE_HEIGHT = 30;

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** An SVG of `bars` under `title`, one row each, values printed at the bar ends (rounded). */
export function barChartSvg(title: string, bars: readonly Bar[]): string {
  const width = LABEL_WIDTH + BAR_WIDTH + VALUE_WIDTH;
  const height = TITLE_HEIGHT + bars.length * ROW_HEIGHT + 10;
  const largest = Math.max(...bars.map((bar) => bar.value), 1e-9);
  const rows = bars.map((bar, i) => {
    const y = TITLE_HEIGHT + i * ROW_HEIGHT;
    const length = Math.max(1, (bar.value / largest) * BAR_WIDTH);
    return `<text x="${LABEL_WIDTH - 8}" y="${y + 17}" text-anchor="end">${escapeXml(bar.label)}</text>` +
      `<rect x="${LABEL_WIDTH}" y="${y + 4}" width="${length.toFixed(1)}" height="${ROW_HEIGHT - 8}" fill="${bar.label.startsWith('qemu') ? '#999' : '#3a6ea5'}"/>` +
      `<text x="${(LABEL_WIDTH + length + 6).toFixed(1)}" y="${y + 17}">${Math.round(bar.value)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="13">` +
    `<rect width="100%" height="100%" fill="white"/><text x="8" y="20" font-weight="bold">${escapeXml(title)}</text>${rows.join('')}</svg>\n`;
}
