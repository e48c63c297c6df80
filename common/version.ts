/** The product version: set by the single-executable build, else read from package.json. */
import { readFileSync } from 'node:fs';

/** Defined (as a string literal) by scripts/build-sea.ts; absent when running from source. */
declare const __CITADEL_VERSION__: string | undefined;

export function productVersion(): string {
  if (typeof __CITADEL_VERSION__ === 'string') return __CITADEL_VERSION__;
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'citadel' && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return 'unknown';
}
