// SPDX-License-Identifier: MIT
// Whether this realm's OPFS really gives sync access handles, found without touching an image.

/** The folder (below the OPFS root) and file the probe uses. */
export const SYNC_PROBE_PATH = '.qcow2-wasm/sync-access-probe';

let answer: Promise<boolean> | undefined;

/** Resolves after `ms` milliseconds. */
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Whether createSyncAccessHandle works in this realm (a dedicated worker whose
 * FileSystemFileHandle has it). WebKitGTK exposes the method but its storage process cannot pass
 * the file to the page and rejects with NotSupportedError, after taking the file's exclusive lock,
 * which it keeps for the rest of the browser session: the file can then not be opened for writing
 * at all, not even with createWritable. So the answer is found once per realm on a probe file of
 * its own (SYNC_PROBE_PATH, left empty in the OPFS root), never on an image.
 *
 * A probe that finds the probe file busy (another realm probing: NoModificationAllowedError; in
 * WebKit InvalidStateError, which is also what an earlier failed probe of this session leaves)
 * tries twice more 50 ms apart; a file still busy with InvalidStateError means no sync access.
 * Any other failure answers true, so that opening the image itself reports it.
 */
export function syncAccessWorks(): Promise<boolean> {
  answer ??= probe();
  return answer;
}

async function probe(): Promise<boolean> {
  let file: FileSystemFileHandle;
  try {
    const [folder, name] = SYNC_PROBE_PATH.split('/') as [string, string];
    const root = await navigator.storage.getDirectory();
    file = await (await root.getDirectoryHandle(folder, { create: true })).getFileHandle(name, { create: true });
  } catch {
    return true;
  }
  const factory = file as unknown as { createSyncAccessHandle(): Promise<{ close(): void }> };
  for (let attempt = 1; ; attempt++) {
    try {
      (await factory.createSyncAccessHandle()).close();
      return true;
    } catch (err) {
      const name = err instanceof Error ? err.name : '';
      if (name === 'NotSupportedError') return false;
      const busy = name === 'InvalidStateError' || name === 'NoModificationAllowedError';
      if (!busy) return true;
      if (attempt === 3) return name !== 'InvalidStateError';
      await pause(50);
    }
  }
}
