/**
 * Reading the kernel test's output (and postcopy bench's, which prints the same lines).
 *
 * Linux 6.12 demand_paging_test prints on stdout, through pr_info (printf):
 *
 *   Random seed: 0x6b8b4567
 *   Testing guest mode: PA-bits:ANY, VA-bits:48,  4K pages
 *   guest physical test memory: [0xfffcfbffe000, 0xfffcffffe000)
 *   Finished creating vCPUs and starting uffd threads
 *   Started all vCPUs
 *   All vCPU threads joined
 *   Total guest execution time:\t%ld.%.9lds
 *   Per-vcpu demand paging rate:\t%f pgs/sec/vcpu
 *   Overall demand paging rate:\t%f pgs/sec
 *
 * Per-vcpu = vCPU 0's pages / total time; Overall = Per-vcpu × vCPUs.
 */

export interface Figures {
  /** "Total guest execution time:" in seconds. */
  totalSeconds: number;
  /** "Per-vcpu demand paging rate:" pgs/sec/vcpu */
  perVcpu: number;
  /** "Overall demand paging rate:" pgs/sec */
  overall: number;
}

/** The three figure lines exactly as the kernel prints them (a tab after the colon, %f's six decimals). */
const EXACT = {
  total: /^Total guest execution time:\t(\d+\.\d{9})s$/m,
  perVcpu: /^Per-vcpu demand paging rate:\t(\d+\.\d{6}) pgs\/sec\/vcpu$/m,
  overall: /^Overall demand paging rate:\t(\d+\.\d{6}) pgs\/sec$/m,
};

/** The same lines, read leniently (any spacing, any number format), so a near miss still yields figures. */
const LOOSE = {
  total: /^Total guest execution time:\s*([\d.eE+-]+)\s*s\s*$/m,
  perVcpu: /^Per-vcpu demand paging rate:\s*([\d.eE+-]+|inf|nan)\s*pgs\/sec\/vcpu\s*$/m,
  overall: /^Overall demand paging rate:\s*([\d.eE+-]+|inf|nan)\s*pgs\/sec\s*$/m,
};

export interface Parsed {
  figures: Figures | null;
  /** Lines that carry the figures but not in the kernel's exact format. */
  formatProblems: string[];
}

const LABEL = {
  total: 'Total guest execution time:',
  perVcpu: 'Per-vcpu demand paging rate:',
  overall: 'Overall demand paging rate:',
};
const FIELD = { total: 'totalSeconds', perVcpu: 'perVcpu', overall: 'overall' } as const;

export function parseOutput(stdout: string): Parsed {
  const formatProblems: string[] = [];
  const values: Partial<Figures> = {};
  for (const key of ['total', 'perVcpu', 'overall'] as const) {
    const exact = EXACT[key].exec(stdout);
    const match = exact ?? LOOSE[key].exec(stdout);
    if (match) values[FIELD[key]] = Number(match[1]);
    if (!exact) {
      const line = stdout.split('\n').find((l) => l.startsWith(LABEL[key]));
      formatProblems.push(line === undefined ? `no "${LABEL[key]}" line` : `not the kernel's format: ${JSON.stringify(line)}`);
    }
  }
  const { totalSeconds, perVcpu, overall } = values;
  const figures = totalSeconds !== undefined && perVcpu !== undefined && overall !== undefined ? { totalSeconds, perVcpu, overall } : null;
  return { figures, formatProblems };
}

/**
 * A line's shape: hex and decimal numbers replaced by placeholders (keeping how many
 * fraction digits a number has), so two runs' outputs compare line by line.
 */
export function shape(line: string): string {
  return line
    .replace(/0x[0-9a-f]+/gi, '0x#')
    .replace(/\d+\.(\d+)/g, (_m, frac: string) => `#.${'#'.repeat(frac.length)}`)
    .replace(/\d+/g, '#');
}

/** Where `other`'s stdout lines differ in shape from the kernel's (empty when they match line for line). */
export function shapeDifferences(kernelStdout: string, otherStdout: string): string[] {
  const k = kernelStdout.split('\n').filter((l) => l.length > 0);
  const o = otherStdout.split('\n').filter((l) => l.length > 0);
  const diffs: string[] = [];
  for (let i = 0; i < Math.max(k.length, o.length); i++) {
    const kl = k[i];
    const ol = o[i];
    if (kl !== undefined && ol !== undefined && shape(kl) === shape(ol)) continue;
    diffs.push(`line ${i + 1}: kernel ${JSON.stringify(kl ?? '(none)')}, postcopy ${JSON.stringify(ol ?? '(none)')}`);
  }
  return diffs;
}
