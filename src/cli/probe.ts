import { BACKING_SOURCES, isBackingSource } from '../memory/backing.js';
import type { Finding, ProbeReport } from '../probe/index.js';
import { type Command, ExitCode, type Io, UsageError, parseOptions } from './command.js';
import { renderProbe } from './probe-text.js';

const NAME = 'postcopy probe';

/**
 * What every postcopy command needs: without these, --strict exits 3. The rest of the
 * report (hugepages, guest_memfd, dirty rings) narrows the choices without blocking.
 */
function essentials(report: ProbeReport): [string, Finding][] {
  return [
    ['userfaultfd', report.userfaultfd.usable],
    ['KVM', report.kvm.device],
    ['KVM VM', report.kvm.vm],
  ];
}

export const probeCommand: Command = {
  name: 'probe',
  summary: 'what this machine can do: userfaultfd, backing sources, KVM, hugepages',
  usage: `${NAME} [--json] [--source <name>]... [--reserve-hugepages] [--strict]`,
  description: [
    'Finds out, by trying each thing for real, what this machine offers postcopy: which',
    'userfaultfd features the kernel grants, which backing sources can be registered in',
    'MISSING, MINOR and WP mode, which KVM capabilities are present, and the hugepage pools.',
    'Nothing is inferred from the kernel version. Every missing piece comes with a remedy.',
    'The probe changes nothing on the machine unless --reserve-hugepages is given.',
    '',
    `Backing sources: ${BACKING_SOURCES.join(', ')}.`,
  ].join('\n'),
  optionHelp: [
    ['--json', 'print the report as JSON'],
    ['--source <name>', 'try only this backing source (repeatable)'],
    ['--reserve-hugepages', 'grow an empty hugetlb pool by one page to try it, then shrink it back (root)'],
    ['--strict', 'exit 3 when userfaultfd or KVM is unusable here'],
  ],

  async run(args: string[], io: Io): Promise<number> {
    const { values } = parseOptions(NAME, args, {
      json: { type: 'boolean' },
      source: { type: 'string', multiple: true },
      'reserve-hugepages': { type: 'boolean' },
      strict: { type: 'boolean' },
    });
    const sources = values.source?.map((s) => {
      if (!isBackingSource(s)) throw new UsageError(`unknown backing source '${s}'; one of ${BACKING_SOURCES.join(', ')}`, `${NAME} --help`);
      return s;
    });
    // Loaded here, not at the top: `postcopy --help` works even when the native addon does not.
    const { probe } = await import('../probe/index.js');
    const report = probe({ reserveHugepages: values['reserve-hugepages'] ?? false, ...(sources ? { sources } : {}) });
    io.out(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderProbe(report));
    if (values.strict) {
      const lacking = essentials(report).filter(([, f]) => f.status !== 'ok');
      for (const [what, f] of lacking) io.err(`postcopy: ${what}: ${f.detail}. ${f.remedy ?? ''}\n`);
      if (lacking.length > 0) return ExitCode.UNAVAILABLE;
    }
    return ExitCode.OK;
  },
};
