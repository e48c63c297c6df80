/**
 * The compiled descriptor set of proto/ (written by `npm run gen`), which server reflection
 * serves. The single executable carries it as an asset (scripts/build-sea.ts); from source it
 * is read beside the sources.
 */
import { readFile } from 'node:fs/promises';
import * as sea from 'node:sea';

/** The asset's name inside the citadel-server executable. */
export const DESCRIPTOR_ASSET = 'citadel.binpb';

/** Where `npm run gen` writes it. */
export const DESCRIPTOR_PATH = new URL('../../gen/citadel.binpb', import.meta.url);

/** The descriptor set's bytes. */
export async function descriptorSet(): Promise<Buffer> {
  if (sea.isSea()) return Buffer.from(sea.getAsset(DESCRIPTOR_ASSET));
  return readFile(DESCRIPTOR_PATH);
}
