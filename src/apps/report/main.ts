/**
 * `postcopy report RUN.json… -o report.html`, and the --html FILE of bench and migrate:
 * checks the runs, works out the view, writes one self-contained HTML file.
 */
import { writeFileSync } from 'node:fs';
import { PostcopyError } from '../../errors.js';
import { reportHtml } from './html.js';
import { checkRun, type LoadedRun, loadRuns } from './load.js';
import { reportView } from './view.js';

/** Writes the report of `runs` to `out`; returns its size in bytes. */
export function writeReport(runs: readonly LoadedRun[], out: string): number {
  const html = reportHtml(reportView(runs));
  try {
    writeFileSync(out, html);
  } catch (e) {
    throw new PostcopyError('ERR_REPORT_WRITE', `cannot write the report to ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'Give -o a path in a writable directory');
  }
  return Buffer.byteLength(html);
}

/** `postcopy report`: the files, checked, into one report. */
export function reportMain(files: readonly string[], out: string): { bytes: number; runs: number } {
  const runs = loadRuns(files);
  return { bytes: writeReport(runs, out), runs: runs.length };
}

/** --html FILE on a command: this run's JSON (as --json prints it) as a report. */
export function writeRunHtml(json: unknown, out: string): number {
  // Through the JSON text, as a file would be read: what the page shows is what --json says.
  const parsed: unknown = JSON.parse(JSON.stringify(json, (_, v: unknown) => (typeof v === 'bigint' ? String(v) : v)));
  return writeReport([checkRun(out.replace(/\.html?$/, '.json'), parsed)], out);
}
