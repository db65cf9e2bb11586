/**
 * `postcopy migrate send | receive | --demo`: runs a role, shows progress on a terminal,
 * prints the figures (text or JSON), and says whether the oracle passed.
 */
import { spawn } from 'node:child_process';
import { totalmem } from 'node:os';
import { Progress } from '../../cli/progress.js';
import type { Io } from '../../cli/command.js';
import { PostcopyError, UnsupportedError } from '../../errors.js';
import type { GuestBackendName } from '../../guest/guest.js';
import { defaultBackend, kvmAvailability } from '../../guest/open.js';
import { BACKING_INFO } from '../../memory/backing.js';
import { hugepagePool, reserveRemedy } from '../../memory/hugepages.js';
import { Listener } from '../../transport/listener.js';
import { Userfaultfd } from '../../uffd/userfaultfd.js';
import { formatHostPort } from '../../transport/host-port.js';
import { formatSize } from '../../util/format.js';
import { tellRefused } from './destination/accept.js';
import { RECOVER_SIGNAL } from './recover-command.js';
import { type DestinationEvent, type DestinationReport, runDestination } from './destination/destination.js';
import { GUEST_ADDRESS, type ReceiveOptions, type SendOptions } from './options.js';
import { clean, destinationLines, sourceLines, toJson } from './report.js';
import { type SourceEvent, type SourceReport, runSource } from './source/source.js';
import { Recorder, type SeriesData, seriesEnabled } from '../../metrics/series.js';
import { type RunInfo, runInfo } from '../../metrics/run-info.js';
import { recordDestinationEvents, recordSourceEvents } from './recording.js';

/** A side's report as its JSON has it: with the run header (not inside the demo) and what was recorded over time. */
export type Recorded<T> = T & { readonly run?: RunInfo; readonly series: SeriesData | null };

function sourceProgress(progress: Progress | undefined, io: Io) {
  return (e: SourceEvent) => {
    if (e.phase === 'round') progress?.update(`precopy round ${e.round}: ${e.pages} pages in ${e.ms.toFixed(0)} ms`);
    else if (e.phase === 'postcopy') progress?.update(`post-copy: ${e.sent}/${e.of} stale pages sent`);
    else if (e.phase === 'paused') {
      progress?.clear();
      io.err(`post-copy paused: ${e.reason}; reconnecting (\`postcopy migrate recover ${process.pid}\` retries at once)\n`);
    } else if (e.phase === 'retry') progress?.update(`post-copy paused: attempt ${e.attempt} failed (${e.reason}); next in ${e.inMs} ms`);
    else if (e.phase === 'recovered') {
      progress?.clear();
      io.err(`post-copy resumed (attempt ${e.attempt}, paused ${e.pausedMs.toFixed(0)} ms): ${e.needed} page(s) still to send\n`);
    } else if (e.phase === 'switchover') {
      progress?.clear();
      // Always said, --json or not, terminal or not: a supervisor or a test waits for this line.
      io.err(`switchover: ${e.stalePages} stale page(s); post-copy started\n`);
    }
  };
}

/** The guest backend asked for, or this machine's default; said on the terminal (not with --json: the report has it). */
export function chooseBackend(asked: GuestBackendName | undefined, io: Io, json: boolean): GuestBackendName {
  if (asked) return asked;
  const d = defaultBackend();
  if (!json) io.err(`guest: ${d.backend} (${d.why}; --guest to choose)\n`);
  return d.backend;
}

export async function sendMain(o: SendOptions, io: Io, json: boolean, argv?: readonly string[]): Promise<Recorded<SourceReport>> {
  checkMemory(o.bytesPerVcpu, o.vcpus, 1);
  const progress = json ? undefined : Progress.forStream(process.stderr);
  const recorder = seriesEnabled() ? new Recorder() : undefined;
  try {
    const shown = sourceProgress(progress, io);
    const ran = await runSource({
      host: o.host,
      port: o.port,
      shape: { source: o.source, size: o.bytesPerVcpu * o.vcpus, vcpus: o.vcpus, guestAddress: GUEST_ADDRESS },
      guest: chooseBackend(o.guest, io, json),
      ...(o.tracking ? { tracking: o.tracking } : {}),
      mode: o.mode,
      policy: o.policy,
      warmupMs: o.warmupMs,
      bandwidth: o.bandwidth,
      timeoutMs: o.timeoutMs,
      security: o.security,
      recoverTimeoutMs: o.recoverTimeoutMs,
      onRecoverRequest: (retry) => process.on(RECOVER_SIGNAL, retry),
      onEvent: recorder ? recordSourceEvents(recorder, shown) : shown,
      ...(recorder ? { recorder } : {}),
    });
    const report = { ...(argv ? { run: runInfo('migrate-send', ['migrate', ...argv]) } : {}), ...ran, series: recorder?.stop() ?? null };
    progress?.clear();
    if (json) io.out(`${toJson(report)}\n`);
    else io.out(`${sourceLines(report).join('\n')}\n`);
    return report;
  } finally {
    progress?.clear();
  }
}

export async function receiveMain(o: ReceiveOptions, io: Io, json: boolean, argv?: readonly string[]): Promise<Recorded<DestinationReport>> {
  // Every source needs userfaultfd here: find out now (PermissionError says what to do),
  // not by refusing each source that connects.
  Userfaultfd.open({ nonBlocking: true }).close();
  // `postcopy migrate recover` on this side: nothing to do but say so (the listener is open).
  process.on(RECOVER_SIGNAL, () => io.err('recover: this destination is listening; the source reconnects to it\n'));
  const listener = await Listener.listen(o.host, o.port, { security: o.security, onRefused: (peer, reason) => io.err(`refused ${peer}: ${reason}\n`), tellUnauthorized: tellRefused });
  const progress = json ? undefined : Progress.forStream(process.stderr);
  const recorder = seriesEnabled() ? new Recorder() : undefined;
  try {
    const shown = (e: DestinationEvent) => {
      // These lines go to stderr whatever the output format: the demo and tests read them.
      if (e.phase === 'listening') io.err(`listening on ${formatHostPort(e.host, e.port)}\n`);
      else if (e.phase === 'refused') io.err(`refused ${e.peer}: ${e.reason}\n`);
      else if (e.phase === 'accepted') io.err(`accepted ${e.peer}: ${formatSize(e.hello.memory.size)}, ${e.hello.vcpus} vCPU(s), ${e.hello.source}, ${e.hello.mode.toUpperCase()}\n`);
      else if (e.phase === 'paused') io.err(`post-copy paused: ${e.reason}; ${e.missingPages} page(s) missing; the guest runs on where it can, waiting for the source to resume (up to ${o.recoverTimeoutMs} ms)\n`);
      else if (e.phase === 'recovered') io.err(`post-copy resumed after ${e.pausedMs.toFixed(0)} ms: ${e.needed} page(s) still needed, ${e.requests} request(s) asked again\n`);
      else if (e.phase === 'resumed') io.err(`resumed: ${e.stalePages} stale page(s), downtime ${e.downtimeMs.toFixed(2)} ms\n`);
      else if (e.phase === 'round') progress?.update(`precopy round ${e.round}: ${e.pages} pages`);
      else if (e.phase === 'postcopy') progress?.update(`post-copy: ${e.received}/${e.of} stale pages in`);
      else if (e.phase === 'complete') progress?.clear();
    };
    const ran = await runDestination({
      listener,
      ...(o.mode ? { mode: o.mode } : {}),
      ...(o.guest ? { guest: o.guest } : {}),
      ...(o.source ? { source: o.source } : {}),
      maxMemory: o.maxMemory,
      mapClean: o.mapClean,
      runAfterMs: o.runAfterMs,
      timeoutMs: o.timeoutMs,
      security: o.security,
      recoverTimeoutMs: o.recoverTimeoutMs,
      onEvent: recorder ? recordDestinationEvents(recorder, shown) : shown,
      ...(recorder ? { recorder } : {}),
    });
    const report = { ...(argv ? { run: runInfo('migrate-receive', ['migrate', ...argv]) } : {}), ...ran, series: recorder?.stop() ?? null };
    progress?.clear();
    if (json) io.out(`${toJson(report)}\n`);
    else io.out(`${destinationLines(report).join('\n')}\n`);
    return report;
  } finally {
    progress?.clear();
    await listener.close();
  }
}

/** Drops the CLI's own prefix from a child's message, so that it is not said twice when wrapped. */
const unprefixed = (text: string) => text.replace(/^postcopy: /gm, '');

/**
 * What the demo needs, checked before anything starts (a child process, a guest): the
 * guest backend, userfaultfd, and for hugetlb sources the hugepages of both sides (they
 * run on this one machine). Throws the error that names the remedy (exit 3).
 */
/** Refuses a guest larger than this machine's memory (`copies` of it: the demo holds both sides), with a size that fits. */
export function checkMemory(bytesPerVcpu: number, vcpus: number, copies: number): void {
  const need = bytesPerVcpu * vcpus * copies;
  if (need <= totalmem()) return;
  const gib = (n: number) => `${(n / 2 ** 30).toFixed(1)} GiB`;
  const fits = Math.max(1, Math.floor(totalmem() / 4 / vcpus / copies / 2 ** 20));
  throw new UnsupportedError(
    `-b ${formatSize(bytesPerVcpu)} × ${vcpus} vCPU(s)${copies > 1 ? ` on both sides` : ''} needs ${gib(need)} of memory; this machine has ${gib(totalmem())}`,
    `Use -b ${fits}M or less`,
  );
}

export function demoPreflight(send: Omit<SendOptions, 'host' | 'port'>): GuestBackendName {
  checkMemory(send.bytesPerVcpu, send.vcpus, 2);
  if (send.guest === 'kvm') {
    const k = kvmAvailability();
    if (!k.usable) throw new UnsupportedError(`--guest kvm: ${k.reason}`, 'Leave out --guest to run the threads guest, which needs no KVM');
  }
  Userfaultfd.open({ nonBlocking: true }).close();
  const info = BACKING_INFO[send.source];
  if (info.hugetlb) {
    const need = 2 * Math.ceil((send.bytesPerVcpu * send.vcpus) / info.pageSize);
    const pool = hugepagePool(info.pageSize);
    if (!pool.exists || pool.available < need) {
      throw new UnsupportedError(`-s ${send.source}: the demo runs both sides here and needs ${need} free ${formatSize(info.pageSize)} hugepages, ${pool.exists ? `${pool.available} are` : 'none can be'} available`, reserveRemedy(info.pageSize, need));
    }
  }
  return send.guest ?? defaultBackend().backend;
}

/**
 * Both roles on this machine over loopback: the destination in a child process (two
 * guests, two processes, real TCP), the source here. Prints both sides' figures.
 */
export async function demoMain(send: Omit<SendOptions, 'host' | 'port'>, receive: Pick<ReceiveOptions, 'mapClean' | 'runAfterMs'>, io: Io, json: boolean, argv: readonly string[] = [], securityArgs: readonly string[] = []): Promise<{ run: RunInfo; source: Recorded<SourceReport>; destination: Recorded<DestinationReport> }> {
  const guest = demoPreflight(send);
  send = { ...send, guest };
  const cli = new URL('../../cli/main.js', import.meta.url);
  const child = spawn(
    process.execPath,
    [cli.pathname, 'migrate', 'receive', '--listen', '127.0.0.1:0', '--json', '-s', send.source, '-u', send.mode.toUpperCase(), '--guest', guest,
      '--map-clean', receive.mapClean, '--run-after', `${receive.runAfterMs}ms`, '--timeout', `${send.timeoutMs}ms`, '--recover-timeout', `${send.recoverTimeoutMs}ms`, ...securityArgs],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? 128 + (signal ? 9 : 0))));
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /listening on [^\n]*:(\d+)\n/.exec(stderr);
      if (m) resolve(Number(m[1]));
    });
    void exited.then((code) => {
      const why = `the destination exited (${code}) before listening: ${unprefixed(stderr.trim())}`;
      reject(code === 3 ? new UnsupportedError(why) : new PostcopyError('ERR_DEMO', why));
    });
  });
  if (!json) io.err(`destination listening on 127.0.0.1:${port} (pid ${child.pid}); migrating ${formatSize(send.bytesPerVcpu * send.vcpus)}, ${send.vcpus} ${guest === 'kvm' ? 'vCPU(s)' : 'thread(s)'} (${guest} guest), ${send.source}, ${send.mode.toUpperCase()} faults\n`);
  let source: Recorded<SourceReport>;
  try {
    source = await sendMain({ ...send, host: '127.0.0.1', port }, json ? { out: () => undefined, err: () => undefined } : { out: (t) => io.out(`source\n${t.trimEnd().split('\n').map((l) => `  ${l}`).join('\n')}\n`), err: io.err }, json);
  } catch (e) {
    const code = await Promise.race([exited, new Promise<number>((r) => setTimeout(() => (child.kill('SIGKILL'), r(-1)), 5000))]);
    throw new PostcopyError('ERR_DEMO', `${(e as Error).message}; the destination exited ${code}: ${unprefixed(stderr.trim()).split('\n').slice(-2).join(' | ')}`);
  }
  const code = await exited;
  let destination: Recorded<DestinationReport>;
  try {
    destination = JSON.parse(stdout) as Recorded<DestinationReport>;
  } catch {
    throw new PostcopyError('ERR_DEMO', `the destination exited ${code} without a report: ${unprefixed(stderr.trim()).split('\n').slice(-3).join(' | ')}`);
  }
  const run = runInfo('migrate-demo', ['migrate', ...argv]);
  if (json) io.out(`${toJson({ run, source, destination })}\n`);
  else io.out(`destination\n${destinationLines(destination).map((l) => `  ${l}`).join('\n')}\n${clean(destination) ? 'PASS: not one write lost' : 'FAIL: writes were lost'}\n`);
  return { run, source, destination };
}
