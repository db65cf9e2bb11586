import { readFileSync } from 'node:fs';

/** The package's version, from its package.json (dist/src/cli/ -> package root). */
export function packageVersion(): string {
  const path = new URL('../../../package.json', import.meta.url);
  return (JSON.parse(readFileSync(path, 'utf8')) as { version: string }).version;
}
