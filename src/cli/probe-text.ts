// The human-readable form of a probe report: aligned, one line per item, a mark in front
// (✓ works, ✗ tried and refused, – not tried), remedies indented under what needs them.
// Imports types only from src/probe, so rendering never loads the native addon.
import type { BackingReport, Finding, ProbeReport, ProbedMode } from '../probe/index.js';
import { formatSize } from '../util/format.js';

const MARK: Record<Finding['status'], string> = { ok: '✓', missing: '✗', skipped: '–' };
const WIDTH = 100;
const REMEDY_INDENT = '      → ';

interface Line {
  readonly mark: string;
  readonly label: string;
  readonly value: string;
  readonly remedy?: string | undefined;
}

function found(label: string, f: Finding, value: string = f.detail): Line {
  return { mark: MARK[f.status], label, value, remedy: f.status === 'ok' ? undefined : f.remedy };
}

function info(label: string, value: string): Line {
  return { mark: ' ', label, value };
}

/**
 * Word-wraps `text` to WIDTH, continuation lines indented by `indent` columns. A `quoted
 * command` is never split, so it can be copied as it stands.
 */
function wrap(text: string, indent: number): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.match(/\S*`[^`]*`\S*|\S+/g) ?? []) {
    if (line && indent + line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  return lines.join(`\n${' '.repeat(indent)}`);
}

/**
 * A titled block of aligned lines. A remedy shared by consecutive lines is printed once,
 * after the last of them.
 */
function section(title: string, lines: readonly Line[]): string[] {
  const width = Math.max(...lines.map((l) => l.label.length));
  const out = [title];
  lines.forEach((l, i) => {
    const head = `  ${l.mark} ${l.label.padEnd(width)}  `;
    out.push(`${head}${wrap(l.value, head.length)}`.trimEnd());
    if (l.remedy && lines[i + 1]?.remedy !== l.remedy) out.push(`${REMEDY_INDENT}${wrap(l.remedy, REMEDY_INDENT.length)}`);
  });
  return out;
}

function yesNo(b: boolean): string {
  return b ? 'yes' : 'no';
}

function privileges(r: ProbeReport): string[] {
  const p = r.privileges;
  const caps = Object.entries(p.capabilities).map(([name, has]) => `${name} ${yesNo(has)}`).join(', ');
  return section('privileges', [
    info('user', `uid ${p.uid}, euid ${p.euid}${p.root ? ' (root)' : ''}; ${caps}`),
    found('userfaultfd', p.userfaultfd),
    found('/dev/kvm', p.kvm),
    found('hugepage pools', p.hugepagePools),
  ]);
}

function userfaultfd(r: ProbeReport): string[] {
  const u = r.userfaultfd;
  const node = u.deviceNode;
  const nodeText = node.exists ? `mode ${node.mode}, uid ${node.uid}, gid ${node.gid}, ${node.accessible ? '' : 'not '}accessible to this process` : 'absent';
  return section('userfaultfd', [
    found('usable for KVM faults', u.usable),
    found('userfaultfd(2)', u.syscall),
    found('userfaultfd(2) user-mode-only', u.syscallUserModeOnly),
    found('/dev/userfaultfd', u.device, `${u.device.detail} (${nodeText})`),
    info('vm.unprivileged_userfaultfd', u.unprivilegedSysctl === null ? 'absent' : String(u.unprivilegedSysctl)),
    info('features', u.features ? `${u.features.mask}: ${u.features.names.join(' ')}` : 'unknown (no descriptor)'),
    info('ioctls', u.ioctls.join(' ') || 'unknown'),
  ]);
}

const MODE_HEADERS: Record<ProbedMode, string> = { MISSING: 'MISSING', MINOR: 'MINOR', WP: 'WP' };

/** A backing source's row of marks, and the lines explaining what is not ✓ under it. */
function backingRow(b: BackingReport, width: number): { row: string; notes: string[] } {
  const modes = Object.keys(b.register) as ProbedMode[];
  const cells = modes.map((m) => MARK[b.register[m].status].padEnd(MODE_HEADERS[m].length)).join('  ');
  const row = `    ${b.source.padEnd(width)}  ${formatSize(b.pageSize).padEnd(6)}  ${cells}`.trimEnd();
  const problems: { mark: string; modes: string[]; detail: string; remedy: string | undefined }[] = [];
  if (b.create.status !== 'ok') {
    problems.push({ mark: MARK[b.create.status], modes: [], detail: b.create.detail, remedy: b.create.remedy });
  } else {
    // Modes refused for the same reason share one line (guest_memfd refuses all three alike).
    for (const m of modes) {
      const f = b.register[m];
      if (f.status === 'ok') continue;
      const same = problems.find((p) => p.detail === f.detail && p.remedy === f.remedy);
      if (same) same.modes.push(m);
      else problems.push({ mark: MARK[f.status], modes: [m], detail: f.detail, remedy: f.remedy });
    }
  }
  const notes = problems.flatMap((p) => {
    const head = `      ${p.mark} `;
    const line = `${head}${wrap(p.modes.length ? `${p.modes.join(', ')}: ${p.detail}` : p.detail, head.length)}`;
    return p.remedy ? [line, `        → ${wrap(p.remedy, 10)}`] : [line];
  });
  return { row, notes };
}

function backings(r: ProbeReport): string[] {
  if (r.backings.length === 0) return [];
  const width = Math.max('source'.length, ...r.backings.map((b) => b.source.length));
  const modes = Object.keys(r.backings[0]!.register) as ProbedMode[];
  const rows = r.backings.map((b) => backingRow(b, width));
  const out = [
    'backing sources: UFFDIO_REGISTER of one page, each mode on a fresh userfaultfd',
    `    ${'source'.padEnd(width)}  ${'page'.padEnd(6)}  ${modes.map((m) => MODE_HEADERS[m]).join('  ')}`,
  ];
  rows.forEach(({ row, notes }, i) => {
    out.push(row);
    // Rows that fail alike (no userfaultfd at all) are explained once, under the last of them.
    if (notes.join('\n') !== rows[i + 1]?.notes.join('\n')) out.push(...notes);
  });
  return out;
}

function kvm(r: ProbeReport): string[] {
  const k = r.kvm;
  return section('kvm', [
    found('/dev/kvm', k.device),
    found('KVM_CREATE_VM', k.vm),
    ...k.capabilities.map((c) => found(`${c.name} (${c.number})`, c, `${c.detail} (${c.purpose})`)),
    ...k.unmerged.map((u) => found(u.name, u, `${u.detail}: ${u.series}`)),
  ]);
}

function tracking(r: ProbeReport): string[] {
  const t = r.tracking;
  return section('dirty tracking (a migration\'s source)', [
    found('uffd-wp', t.uffdWp),
    found('kvm-dirty-log', t.kvmDirtyLog),
    info('migrate guest', `${t.defaultGuest} by default (--guest kvm|threads to choose)`),
  ]);
}

function hugepages(r: ProbeReport): string[] {
  const h = r.hugepages;
  return section('hugepages', [
    ...h.pools.map((p) => found(`${formatSize(p.pageSize)} pool`, p)),
    info('transparent', `enabled: ${h.thp.enabled ?? 'absent'}, shmem_enabled: ${h.thp.shmemEnabled ?? 'absent'}`),
  ]);
}

function cpu(r: ProbeReport): string[] {
  const c = r.cpu;
  return section('cpu (for information)', [
    info('virtualization', `${c.virtualization.join(', ') || 'no vmx/svm flags'}; under a hypervisor: ${yesNo(c.hypervisor)}`),
    info('kvm modules', `${c.kvmModules.join(', ') || 'none'}${c.nested !== null ? `; nested=${c.nested}` : ''}`),
    info('note', c.note),
  ]);
}

/** Which sources each mode works on: the answer most readers want from all of the above. */
function summary(r: ProbeReport): string[] {
  const modes = r.backings.length ? (Object.keys(r.backings[0]!.register) as ProbedMode[]) : [];
  const base = r.userfaultfd.usable.status === 'ok' && r.kvm.vm.status === 'ok';
  return section('summary', [
    {
      mark: base ? MARK.ok : MARK.missing,
      label: 'userfaultfd and KVM',
      value: base ? 'usable' : 'not both usable: see above',
    },
    ...modes.map((m) =>
      info(`${m} registration on`, r.backings.filter((b) => b.register[m].status === 'ok').map((b) => b.source).join(', ') || 'nothing'),
    ),
  ]);
}

export function renderProbe(r: ProbeReport): string {
  const blocks = [
    [`postcopy probe: what this machine can do, found by trying (Linux ${r.kernel.release}, ${r.kernel.machine})`],
    privileges(r),
    userfaultfd(r),
    backings(r),
    kvm(r),
    tracking(r),
    hugepages(r),
    cpu(r),
    summary(r),
  ].filter((b) => b.length > 0);
  return `${blocks.map((b) => b.join('\n')).join('\n\n')}\n`;
}
