// SPDX-License-Identifier: MIT
// The browser side of qemu-image-server.ts: whether the test server can make images with qemu-img,
// and the images it makes.

/** What the server says of qemu-img: `missing` what is not installed; `required` that a test must fail then (CI). */
export interface QemuImageStatus { missing?: string; required: boolean }

/** Asks the test server whether it has qemu-img. */
export async function qemuImageStatus(): Promise<QemuImageStatus> {
  const response = await fetch('/__qemu-image/');
  if (!response.ok) throw new Error(`GET /__qemu-image/: ${response.status}`);
  return await response.json() as QemuImageStatus;
}

/** The server's image `name` (TYPE-CLUSTER.qcow2, or TYPE-CLUSTER.raw for qemu-img's reading of it). */
export async function qemuImage(name: string): Promise<Uint8Array> {
  const response = await fetch(`/__qemu-image/${encodeURIComponent(name)}`);
  if (!response.ok) throw new Error(`GET /__qemu-image/${name}: ${response.status} ${await response.text()}`);
  return new Uint8Array(await response.arrayBuffer());
}
