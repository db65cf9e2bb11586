/** `0x7f1234560000` */
export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}

/** A half-open range as it appears in every message: `[0x7f0000000000, 0x7f0000001000)`. */
export function formatRange(start: number, length: number): string {
  return `[${hex(start)}, ${hex(start + length)})`;
}

const units: [number, string][] = [
  [2 ** 30, 'GiB'],
  [2 ** 20, 'MiB'],
  [2 ** 10, 'KiB'],
];

/** 2097152 -> '2 MiB' (exact multiples only, else bytes). */
export function formatSize(bytes: number): string {
  for (const [size, unit] of units) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  }
  return `${bytes} B`;
}

/** '16M', '2g', '4096', '512K' -> bytes; undefined if not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+)([kmgt]?)i?b?$/i.exec(text.trim());
  if (!m) return undefined;
  const shift = { '': 0, k: 10, m: 20, g: 30, t: 40 }[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Number(m[1]) * 2 ** shift;
}

/** '500ms', '2s', '1.5s', '250' (ms) -> milliseconds; undefined if not a duration. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/i.exec(text.trim());
  if (!m) return undefined;
  const scale = { ms: 1, s: 1000, m: 60_000 }[(m[2] ?? 'ms').toLowerCase() as 'ms' | 's' | 'm'];
  return Number(m[1]) * scale;
}

/** 'HOST:PORT' or '[v6]:PORT' -> { host, port }; undefined if it is not one. */
export function parseHostPort(text: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port };
}
