/**
 * Migrations over shaped links, side by side in one run: plain loopback (today's), then two
 * network namespaces joined by veth with tc tbf limiting the rate and a delay-line relay
 * adding the round trip (bench/lib/netns-link.ts, delay-relay.ts), each with and without
 * TLS (PSK). For each link, first what it is: the round trip measured through it (16-byte
 * ping-pong) against what was asked; then one migration: total time against memory ÷ link
 * rate, downtime, fault latency. Everything made is removed at the end, also on failure.
 *
 *   npm run bench:shaped -- [-b 128M] [--links 1g:0.2,1g:1,1g:5,10g:0.2] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { DestinationReport } from '../../src/apps/migrate/destination/destination.js';
import type { SourceReport } from '../../src/apps/migrate/source/source.js';
import { parseSize } from '../../src/util/format.js';
import { postcopy } from '../../test/helpers/processes.js';
import { describeMachine, machineFacts } from '../lib/machine.js';
import { NetnsLink, netnsUnavailable } from '../lib/netns-link.js';

const RELAY = fileURLToPath(new URL('../lib/delay-relay.js', import.meta.url));
const { values } = parseArgs({ options: { b: { type: 'string' }, links: { type: 'string' }, 'auto-converge-too': { type: 'boolean' }, 'no-tls': { type: 'boolean' }, json: { type: 'boolean' } } });
/** Each link is also run with these send flags (QEMU's auto-converge against post-copy taking over). */
const VARIANTS: readonly string[][] = values['auto-converge-too'] ? [[], ['--auto-converge']] : [[]];
const TLS_MODES = values['no-tls'] ? [false] : [false, true];
const perVcpu = values.b ?? '128M';
const memory = 2 * (parseSize(perVcpu) ?? 0);
const links = (values.links ?? '1g:0.2,1g:1,1g:5,10g:0.2').split(',').map((l) => {
  const [rate, rtt] = l.split(':');
  return { rateBits: Number.parseFloat(rate!) * (rate!.toLowerCase().endsWith('g') ? 1e9 : 1e6), rttMs: Number(rtt) };
});
const why = netnsUnavailable();
if (why) {
  console.error(`bench:shaped: ${why}`);
  process.exit(3);
}
const dir = mkdtempSync(join(tmpdir(), 'postcopy-shaped-'));
const key = join(dir, 'key.hex');
writeFileSync(key, `${'7e'.repeat(32)}\n`);

const ECHO = `require('net').createServer(s=>{s.setNoDelay(true);s.pipe(s)}).listen(0,process.argv[1],function(){console.error('echo on '+this.address().port)})`;
const PING = `const s=require('net').connect(+process.argv[2],process.argv[1],()=>{s.setNoDelay(true);const r=[];let t;const go=()=>{t=process.hrtime.bigint();s.write(Buffer.alloc(16))};let got=0;s.on('data',d=>{got+=d.length;if(got<16)return;got=0;r.push(Number(process.hrtime.bigint()-t)/1e6);if(r.length<200)go();else{r.sort((a,b)=>a-b);console.log(r[100]);s.destroy()}});go()})`;

function line(p: ReturnType<typeof spawn>, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    p.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const m = re.exec(text);
      if (m) resolve(m);
    });
    p.on('exit', (c) => reject(new Error(`exited ${c} before ${re}: ${text}`)));
  });
}

interface Row {
  readonly link: string;
  readonly variant: string;
  readonly reason: string;
  readonly tls: boolean;
  readonly askedRttMs: number | undefined;
  readonly measuredRttMs: number | undefined;
  readonly totalMs: number;
  readonly idealMs: number | undefined;
  readonly downtimeMs: number;
  readonly faultP50Ms: number;
  readonly faultP99Ms: number;
  readonly lostWrites: number;
}

async function migrate(via: { src: string[]; dst: string[] }, host: string, connectTo: (port: number) => Promise<string>, tls: boolean, extra: readonly string[] = []): Promise<{ source: SourceReport; destination: DestinationReport }> {
  const sec = tls ? ['--psk-file', key] : host.startsWith('127.') ? [] : ['--insecure'];
  const common = ['--json', '--timeout', '10s', '--guest', 'threads'];
  const dst = postcopy(['migrate', 'receive', '--listen', `${host}:0`, '--run-after', '200ms', ...common, ...sec], via.dst);
  const port = Number((await dst.waitFor(/listening on [\d.]+:(\d+)/))[1]);
  const target = await connectTo(port);
  const src = postcopy(['migrate', 'send', '--connect', target, '-s', 'shmem', '-b', perVcpu, '-v', '2', '--warmup', '200ms', ...common, ...sec.filter((f) => f !== '--insecure'), ...extra], via.src);
  const [s, d] = await Promise.all([src.exited(300_000), dst.exited(300_000)]);
  if (s !== 0 || d !== 0) throw new Error(`migration failed (${s}/${d}): ${src.stderr()} ${dst.stderr()}`);
  return { source: JSON.parse(src.stdout()) as SourceReport, destination: JSON.parse(dst.stdout()) as DestinationReport };
}

const rows: Row[] = [];
const row = (link: string, tls: boolean, r: { source: SourceReport; destination: DestinationReport }, rateBits?: number, asked?: number, measured?: number, variant: readonly string[] = []): Row => ({
  link,
  variant: variant.join(' ') || 'default',
  reason: `${r.source.switchover.reason}${r.source.switchover.throttlePercent ? ` (throttled ${r.source.switchover.throttlePercent}%)` : ''}`,
  tls,
  askedRttMs: asked,
  measuredRttMs: measured,
  totalMs: r.source.totalMs,
  idealMs: rateBits ? (memory * 8) / rateBits * 1000 : undefined,
  downtimeMs: r.destination.downtimeMs,
  faultP50Ms: r.destination.latencyMs.p50,
  faultP99Ms: r.destination.latencyMs.p99,
  lostWrites: r.destination.oracle.lostWrites + r.destination.oracle.guestMismatches,
});
try {
  for (const tls of TLS_MODES) rows.push(row('loopback', tls, await migrate({ src: [], dst: [] }, '127.0.0.1', async (p) => `127.0.0.1:${p}`, tls)));
  for (const l of links) {
    const link = NetnsLink.create({ rateBitsPerSecond: l.rateBits });
    const relays: ReturnType<typeof spawn>[] = [];
    try {
      const dstAddr = link.address('dst');
      // The relay runs on the destination's host, in front of its port: the veth carries the delayed stream.
      const relayTo = async (port: number) => {
        const r = link.spawn('dst', [process.execPath, RELAY, dstAddr, '0', dstAddr, String(port), String(l.rttMs)]);
        relays.push(r);
        return `${dstAddr}:${(await line(r, /relay listening on [\d.]+:(\d+)/))[1]}`;
      };
      const echo = link.spawn('dst', [process.execPath, '-e', ECHO, dstAddr]);
      relays.push(echo);
      const echoPort = Number((await line(echo, /echo on (\d+)/))[1]);
      const ping = link.spawn('src', [process.execPath, '-e', PING, dstAddr, (await relayTo(echoPort)).split(':')[1]!]);
      const measured = await new Promise<number>((resolve) => {
        let out = '';
        ping.stdout.on('data', (d: Buffer) => (out += d.toString()));
        ping.on('exit', () => resolve(Number(out.trim())));
      });
      const name = `${l.rateBits / 1e9} Gbit/s, ${l.rttMs} ms`;
      for (const tls of TLS_MODES) {
        for (const v of VARIANTS) {
          rows.push(row(name, tls, await migrate({ src: ['ip', 'netns', 'exec', link.ns('src')], dst: ['ip', 'netns', 'exec', link.ns('dst')] }, dstAddr, relayTo, tls, v), l.rateBits, l.rttMs, measured, v));
          process.stderr.write(`${name}${tls ? ', TLS' : ''} ${v.join(' ')}: ${rows.at(-1)!.totalMs.toFixed(0)} ms\n`);
        }
      }
    } finally {
      for (const r of relays) r.kill('SIGKILL');
      link.close();
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const f = (n: number | undefined, d = 1) => (n === undefined || !Number.isFinite(n) ? '—' : n.toFixed(d));
if (values.json) console.log(JSON.stringify({ machine: machineFacts(), memory, rows }, null, 2));
else {
  console.log(describeMachine(machineFacts()).join('\n'));
  console.log(`threads guest, ${memory / 2 ** 20} MiB, 2 workers, shmem/MINOR, default switchover policy`);
  console.log('| link | TLS | policy | switchover | RTT asked / measured ms | total ms | total ÷ (memory ÷ rate) | downtime ms | fault p50 / p99 ms | lost writes |');
  console.log('|---|---|---|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(`| ${r.link} | ${r.tls ? 'PSK' : 'no'} | ${r.variant} | ${r.reason} | ${f(r.askedRttMs)} / ${f(r.measuredRttMs, 2)} | ${f(r.totalMs, 0)} | ${r.idealMs ? f(r.totalMs / r.idealMs, 2) : '—'} | ${f(r.downtimeMs, 2)} | ${f(r.faultP50Ms, 2)} / ${f(r.faultP99Ms, 2)} | ${r.lostWrites} |`);
  }
}
