/**
 * Reading the run files `postcopy report` is given: each must be the JSON of a postcopy run
 * (`bench --json`, `migrate … --json`), recognised by its run header. Anything else is
 * refused with the file's name and how to make a right one (exit 3).
 */
import { readFileSync } from 'node:fs';
import { UnsupportedError } from '../../errors.js';
import { RUN_KINDS, type RunInfo } from '../../metrics/run-info.js';
import type { SeriesData } from '../../metrics/series.js';

/** A file that is not a postcopy run's JSON. */
export class RunFileError extends UnsupportedError {
  override name = 'RunFileError';
  constructor(readonly file: string, why: string) {
    super(`${file}: ${why}`, 'Give files written by `postcopy bench --json` or `postcopy migrate … --json` (or use their --html FILE)');
    Object.defineProperty(this, 'code', { value: 'ERR_RUN_FILE' });
  }
}

/** The fields of a bench run's JSON that the report reads (src/apps/bench/report.ts resultJson). */
export interface BenchJson {
  readonly run: RunInfo;
  readonly options: { readonly mode: string | null; readonly source: string; readonly bytesPerVcpu: number; readonly vcpus: number; readonly vcpuThreads: boolean };
  readonly backend: string;
  readonly totalSeconds: number;
  readonly pagesPerVcpu: number;
  readonly overallRate: number;
  readonly perVcpuRate: number;
  readonly vcpus: readonly { readonly index: number; readonly seconds: number; readonly rate: number }[];
  readonly mismatches: number;
  readonly uffd: null | {
    readonly faults: number;
    readonly serviceNs: { readonly count: number; readonly mean: number; readonly p50: number; readonly p99: number; readonly max: number };
    readonly serviceLog2Us?: readonly number[];
  };
  readonly series: SeriesData | null;
}

/** The fields of a migration side's JSON that the report reads (SourceReport / DestinationReport and their series). */
export interface SourceJson {
  readonly run?: RunInfo;
  readonly guest: string;
  readonly tracker: string;
  readonly unit: number;
  readonly pages: number;
  readonly rounds: readonly { readonly round: number; readonly pages: number; readonly ms: number }[];
  readonly precopyPages: number;
  readonly stalePages: number;
  readonly backgroundPages: number;
  readonly onDemandPages: number;
  readonly downtimeMs: number | null;
  readonly blackout: { readonly pauseMs: number; readonly stateMs: number };
  readonly totalMs: number;
  readonly precopyMs: number;
  readonly series: SeriesData | null;
}

export interface DestinationJson {
  readonly run?: RunInfo;
  readonly guest: string;
  readonly mode: string;
  readonly source: string;
  readonly unit: number;
  readonly pages: number;
  readonly vcpus: number;
  readonly rounds: readonly { readonly round: number; readonly pages: number }[];
  readonly precopyPages: number;
  readonly stalePages: number;
  readonly onDemandPages: number;
  readonly backgroundPages: number;
  readonly downtimeMs: number | null;
  readonly resumeMs: number;
  readonly postcopyMs: number;
  readonly latencyMs: { readonly count: number; readonly p50: number; readonly p99: number; readonly max: number; readonly log2Us?: readonly number[] };
  readonly guestStallMs: number | null;
  readonly oracle: { readonly checkedPages: number; readonly lostWrites: number };
  readonly series: SeriesData | null;
}

export type LoadedRun =
  | { readonly file: string; readonly kind: 'bench'; readonly run: RunInfo; readonly bench: BenchJson; readonly json: unknown }
  | { readonly file: string; readonly kind: 'migrate'; readonly run: RunInfo; readonly source?: SourceJson; readonly destination?: DestinationJson; readonly json: unknown };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Checks that `o` has `fields` of the given types; the first one that is not is the refusal. */
function need(file: string, where: string, o: unknown, fields: Record<string, 'number' | 'string' | 'array' | 'object' | 'number|null' | 'object|null'>): Obj {
  if (!isObj(o)) throw new RunFileError(file, `${where || 'the file'} is not a JSON object`);
  for (const [k, t] of Object.entries(fields)) {
    const v = o[k];
    const ok =
      t === 'array' ? Array.isArray(v)
      : t === 'object' ? isObj(v)
      : t === 'number|null' ? typeof v === 'number' || v === null
      : t === 'object|null' ? isObj(v) || v === null
      : typeof v === t;
    if (!ok) throw new RunFileError(file, `${where ? `${where}.` : ''}${k} is missing or not ${t === 'array' ? 'an array' : `a ${t}`}: not a postcopy run's JSON, or from an incompatible version`);
  }
  return o;
}

function checkSeries(file: string, where: string, s: unknown): void {
  if (s === null || s === undefined) return;
  const o = need(file, where, s, { columns: 'array', t: 'array', values: 'array', events: 'array', t0Ns: 'string' });
  const t = o.t as unknown[];
  if ((o.values as unknown[]).length !== (o.columns as unknown[]).length) throw new RunFileError(file, `${where}: ${(o.values as unknown[]).length} value rows for ${(o.columns as unknown[]).length} columns`);
  for (const row of o.values as unknown[]) {
    if (!Array.isArray(row) || row.length !== t.length) throw new RunFileError(file, `${where}: a value row does not have one value per sample time`);
  }
}

function checkSource(file: string, where: string, s: unknown): SourceJson {
  need(file, where, s, { guest: 'string', rounds: 'array', precopyPages: 'number', stalePages: 'number', backgroundPages: 'number', onDemandPages: 'number', totalMs: 'number', precopyMs: 'number', blackout: 'object', unit: 'number', pages: 'number' });
  checkSeries(file, `${where}.series`, (s as Obj).series);
  return s as SourceJson;
}

function checkDestination(file: string, where: string, d: unknown): DestinationJson {
  need(file, where, d, { guest: 'string', mode: 'string', rounds: 'array', precopyPages: 'number', stalePages: 'number', onDemandPages: 'number', backgroundPages: 'number', postcopyMs: 'number', latencyMs: 'object', oracle: 'object', unit: 'number', pages: 'number', vcpus: 'number' });
  checkSeries(file, `${where}.series`, (d as Obj).series);
  return d as DestinationJson;
}

/** Checks one parsed run; `file` names it in every refusal. */
export function checkRun(file: string, json: unknown): LoadedRun {
  if (!isObj(json)) throw new RunFileError(file, 'not a JSON object, so not a postcopy run');
  const run = json.run;
  if (!isObj(run) || run.tool !== 'postcopy') throw new RunFileError(file, "no postcopy run header (run.tool is not 'postcopy'): not a postcopy run's JSON");
  need(file, 'run', run, { kind: 'string', command: 'string', machine: 'object' });
  const kind = run.kind as string;
  if (!(RUN_KINDS as readonly string[]).includes(kind)) throw new RunFileError(file, `run.kind '${kind}' is not one of ${RUN_KINDS.join(', ')}`);
  const info = run as unknown as RunInfo;
  if (kind === 'bench') {
    need(file, '', json, { totalSeconds: 'number', overallRate: 'number', perVcpuRate: 'number', vcpus: 'array', options: 'object', uffd: 'object|null', mismatches: 'number' });
    checkSeries(file, 'series', json.series);
    return { file, kind: 'bench', run: info, bench: json as unknown as BenchJson, json };
  }
  if (kind === 'migrate-send') return { file, kind: 'migrate', run: info, source: checkSource(file, '', json), json };
  if (kind === 'migrate-receive') return { file, kind: 'migrate', run: info, destination: checkDestination(file, '', json), json };
  return { file, kind: 'migrate', run: info, source: checkSource(file, 'source', json.source), destination: checkDestination(file, 'destination', json.destination), json };
}

/** Reads and checks run files, in order. */
export function loadRuns(files: readonly string[]): LoadedRun[] {
  return files.map((file) => {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new RunFileError(file, code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'a directory, not a run file' : `cannot be read (${code ?? (e as Error).message})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new RunFileError(file, `not JSON (${(e as Error).message})`);
    }
    return checkRun(file, json);
  });
}
