/**
 * Re-assembles a guest program's listing with binutils, for the tests that check the
 * bytes embedded in the source against it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Why the listing cannot be assembled here, or undefined. */
export function missingBinutils(): string | undefined {
  for (const tool of ['as', 'objcopy', 'nm']) {
    const r = spawnSync(tool, ['--version'], { encoding: 'utf8' });
    if (r.error || r.status !== 0) return `\`${tool}\` is not installed (binutils): cannot re-assemble the listing`;
  }
  return undefined;
}

/** `as --64`, then the .text bytes (`objcopy -O binary`) and the symbols (`nm`). */
export function assemble(listing: string): { code: Buffer; symbols: Map<string, number> } {
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-as-'));
  try {
    const [src, obj, bin] = ['p.s', 'p.o', 'p.bin'].map((f) => join(dir, f)) as [string, string, string];
    writeFileSync(src, listing);
    const run = (cmd: string, args: string[]) => {
      const r = spawnSync(cmd, args, { encoding: 'utf8' });
      assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    run('as', ['--64', '-o', obj, src]);
    run('objcopy', ['-O', 'binary', '-j', '.text', obj, bin]);
    const symbols = new Map(
      run('nm', [obj])
        .trim()
        .split('\n')
        .map((l) => l.trim().split(/\s+/))
        .map(([value, , name]) => [name!, parseInt(value!, 16)] as const),
    );
    return { code: readFileSync(bin), symbols };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
