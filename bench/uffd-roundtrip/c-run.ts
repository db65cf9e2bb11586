/**
 * The C side: builds roundtrip.c into bench/out/ when the binary is missing or older than
 * its source, and runs it once per run (a fresh process, so fresh memory every run).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RunResult, RunSpec } from './protocol.js';

// dist/bench/uffd-roundtrip/c-run.js -> <package root>/
const root = new URL('../../../', import.meta.url);
const SOURCE = fileURLToPath(new URL('bench/uffd-roundtrip/roundtrip.c', root));
const OUT_DIR = fileURLToPath(new URL('bench/out/', root));
export const BINARY = `${OUT_DIR}roundtrip`;
export const CFLAGS = ['-O2', '-Wall', '-Wextra', '-pthread'];

function mtime(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Builds the binary if needed; returns true when it was (re)built. */
export function buildC(): boolean {
  const built = mtime(BINARY);
  if (built !== undefined && built >= mtime(SOURCE)!) return false;
  mkdirSync(OUT_DIR, { recursive: true });
  execFileSync('gcc', [...CFLAGS, SOURCE, '-o', BINARY], { stdio: 'inherit' });
  return true;
}

export function runC(spec: RunSpec): RunResult {
  const args = ['--wait', spec.wait, '--pages', String(spec.pages), '--toucher-cpu', String(spec.toucherCpu), '--handler-cpu', String(spec.handlerCpu)];
  const out = execFileSync(BINARY, args, { encoding: 'utf8' });
  return JSON.parse(out) as RunResult;
}
