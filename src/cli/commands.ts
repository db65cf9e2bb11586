import type { Command } from './command.js';
import { benchCommand } from './bench.js';
import { migrateCommand } from './migrate.js';
import { probeCommand } from './probe.js';
import { reportCommand } from './report.js';
import { serveCommand } from './serve.js';
import { snapshotCommand } from './snapshot.js';

/** The subcommands, in the order `postcopy --help` lists them. */
export const COMMANDS: readonly Command[] = [benchCommand, migrateCommand, snapshotCommand, serveCommand, reportCommand, probeCommand];

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}
