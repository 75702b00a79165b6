// SPDX-License-Identifier: MIT
// How many refcount blocks and refcount table clusters an image written in one go needs: enough
// to cover its other clusters and themselves.

/**
 * Refcount blocks and refcount table clusters covering `otherClusters` clusters plus themselves,
 * for clusters of `clusterBytes` and refcounts of 2^`refcountOrder` bits: the smallest counts that
 * cover their own total.
 */
export function refcountClusters(otherClusters: number, clusterBytes: number, refcountOrder: number): { blocks: number; tableClusters: number } {
  const entriesPerBlock = (clusterBytes * 8) / 2 ** refcountOrder;
  const blocksPerTableCluster = clusterBytes / 8;
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = otherClusters + blocks + tableClusters;
    const needBlocks = Math.ceil(total / entriesPerBlock);
    const needTable = Math.ceil(needBlocks / blocksPerTableCluster);
    if (needBlocks <= blocks && needTable <= tableClusters) return { blocks, tableClusters };
    blocks = Math.max(blocks, needBlocks);
    tableClusters = Math.max(tableClusters, needTable);
  }
}
