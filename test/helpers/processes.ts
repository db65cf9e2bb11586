/**
 * The CLI as child processes for tests that need two of them (a migration's source and
 * destination): spawn, wait for a line on stderr, collect output, wait for the exit.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

export interface Child {
  readonly process: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first match of `re` on stderr; rejects if the process exits first or after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** Exit code (128 + n for a signal); kills with SIGKILL after `timeoutMs`. */
  exited(timeoutMs?: number): Promise<number>;
}

/** Runs the CLI with `args`; `via` runs it through another command first (e.g. `ip netns exec NS`). */
export function postcopy(args: string[], via: readonly string[] = []): Child {
  const env = { ...process.env };
  delete env.POSTCOPY_DEBUG;
  const argv = [...via, process.execPath, MAIN, ...args];
  const p = spawn(argv[0]!, argv.slice(1), { env });
  let out = '';
  let err = '';
  const listeners = new Set<() => void>();
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    for (const l of listeners) l();
  });
  const exit = new Promise<number>((resolve) => p.on('exit', (code, signal) => resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : signal === 'SIGTERM' ? 15 : 1))));
  return {
    process: p,
    stdout: () => out,
    stderr: () => err,
    waitFor(re, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(err);
          if (m) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(m);
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no ${re} on stderr within ${timeoutMs} ms; stderr:\n${err}`));
        }, timeoutMs);
        listeners.add(check);
        void exit.then((code) => {
          if (!listeners.has(check)) return;
          listeners.delete(check);
          clearTimeout(timer);
          reject(new Error(`exited ${code} before ${re} on stderr:\n${err}`));
        });
        check();
      });
    },
    async exited(timeoutMs = 120_000) {
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      try {
        return await exit;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
