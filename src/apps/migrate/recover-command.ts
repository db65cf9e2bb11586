/**
 * `postcopy migrate recover PID`: QEMU's migrate-recover for a process of ours. A paused
 * source retries its connection at once instead of at the end of its backoff; a paused
 * destination is listening already and says so. The process is told by SIGUSR1, after
 * checking that the pid is a `postcopy migrate` (a signal to anything else could kill it).
 */
import { readFileSync } from 'node:fs';
import { PostcopyError, UnsupportedError } from '../../errors.js';

export const RECOVER_SIGNAL = 'SIGUSR1';

export function askToRecover(pid: number): string {
  let cmdline: string[];
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    throw new UnsupportedError(`no process ${pid}`, 'Give the pid that `postcopy migrate send` or `receive` runs as (see `pgrep -af "postcopy.*migrate"`)');
  }
  const i = cmdline.indexOf('migrate');
  const role = i >= 0 ? cmdline[i + 1] : undefined;
  if (!cmdline.some((a) => /postcopy|cli\/main\.js$/.test(a)) || (role !== 'send' && role !== 'receive')) {
    throw new UnsupportedError(`process ${pid} is not a \`postcopy migrate send\` or \`receive\` (${cmdline.join(' ').trim().slice(0, 80)})`, 'Give the pid of the migration to recover');
  }
  try {
    process.kill(pid, RECOVER_SIGNAL);
  } catch (e) {
    throw new PostcopyError('ERR_RECOVER', `cannot signal process ${pid}: ${(e as Error).message}`, 'Run as the same user as the migration, or as root');
  }
  return role === 'send'
    ? `asked the source (pid ${pid}) to reconnect now, if its post-copy is paused`
    : `the destination (pid ${pid}) waits on its listener already; it was asked to say its state`;
}
