import type { Command } from './command.js';
import { benchCommand } from './bench.js';
import { migrateCommand } from './migrate.js';
import { probeCommand } from './probe.js';
import { reportCommand } from './report.js';

/** The subcommands, in the order `postcopy --help` lists them. New commands (bench, migrate, serve, report) go here. */
export const COMMANDS: readonly Command[] = [benchCommand, migrateCommand, probeCommand, reportCommand];

export function findCommand(name: string): Command | undefined {
  return COMMANDS.find((c) => c.name === name);
}
