/**
 * Firecracker's message to its page server, checked field by field: a JSON array of
 * GuestRegionUffdMapping { base_host_virt_addr, size, offset, page_size, page_size_kib }
 * (page_size_kib is the deprecated name, and despite it holds bytes; either may be given,
 * and if both, they must agree). Refused, with the reason: anything that is not such an
 * array, a page size that is not a power of two of at least 4 KiB, a region not aligned
 * to it, regions that overlap, a region whose bytes lie beyond the memory file.
 */
export interface GuestRegionUffdMapping {
  readonly base_host_virt_addr: number;
  readonly size: number;
  readonly offset: number;
  readonly page_size: number;
}

export class MappingError extends Error {
  override name = 'MappingError';
}

function field(r: Record<string, unknown>, name: string, i: number): number | undefined {
  const v = r[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new MappingError(`region ${i}: ${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v;
}

export function parseMappings(text: string, fileSize: number): GuestRegionUffdMapping[] {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new MappingError(`the message is not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(raw) || raw.length === 0) throw new MappingError('the message is not a non-empty JSON array of GuestRegionUffdMapping');
  const regions = raw.map((r: unknown, i) => {
    if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new MappingError(`region ${i} is not an object`);
    const o = r as Record<string, unknown>;
    const base = field(o, 'base_host_virt_addr', i);
    const size = field(o, 'size', i);
    const offset = field(o, 'offset', i);
    const ps = field(o, 'page_size', i);
    const kib = field(o, 'page_size_kib', i);
    if (base === undefined || size === undefined || offset === undefined) throw new MappingError(`region ${i} needs base_host_virt_addr, size and offset`);
    if (ps === undefined && kib === undefined) throw new MappingError(`region ${i} needs page_size (or the deprecated page_size_kib)`);
    if (ps !== undefined && kib !== undefined && ps !== kib) throw new MappingError(`region ${i}: page_size ${ps} and page_size_kib ${kib} disagree`);
    const page = (ps ?? kib)!;
    if (page < 4096 || (page & (page - 1)) !== 0) throw new MappingError(`region ${i}: page size ${page} is not a power of two of at least 4096`);
    if (size === 0 || base % page !== 0 || size % page !== 0 || offset % page !== 0) throw new MappingError(`region ${i}: base, size and offset must be non-zero multiples of the page size ${page} (base ${base}, size ${size}, offset ${offset})`);
    if (offset + size > fileSize) throw new MappingError(`region ${i} [offset ${offset}, +${size}) lies beyond the memory file (${fileSize} bytes)`);
    return { base_host_virt_addr: base, size, offset, page_size: page };
  });
  const sorted = [...regions].sort((a, b) => a.base_host_virt_addr - b.base_host_virt_addr);
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!;
    const b = sorted[i]!;
    if (b.base_host_virt_addr < a.base_host_virt_addr + a.size) throw new MappingError(`regions at 0x${a.base_host_virt_addr.toString(16)} (+${a.size}) and 0x${b.base_host_virt_addr.toString(16)} overlap`);
  }
  if (new Set(regions.map((r) => r.page_size)).size > 1) throw new MappingError('the regions of one userfaultfd must share one page size');
  return regions;
}

/**
 * Splits a byte stream into the JSON values it holds (Firecracker writes each mapping
 * array in one message, but a stream socket may cut or join them). Returns the complete
 * values and what is left over. Text outside any value that is not white space, and a
 * value whose brackets do not match, is a value of its own, so that the parser refuses it.
 */
export function splitJsonValues(text: string): { values: string[]; rest: string } {
  const values: string[] = [];
  const open: string[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  let escaped = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (depth === 0 && start < 0) {
      if (/\s/.test(ch)) continue;
      if (ch !== '[' && ch !== '{') {
        // Not the start of an array or object: hand the rest of the line to the parser to refuse.
        const end = text.indexOf('\n', i);
        values.push(text.slice(i, end < 0 ? text.length : end));
        if (end < 0) return { values, rest: '' };
        i = end;
        continue;
      }
      start = i;
    }
    if (ch === '"') inString = true;
    else if (ch === '[' || ch === '{') {
      depth++;
      open.push(ch);
    } else if (ch === ']' || ch === '}') {
      depth--;
      // A bracket that closes what is not open: the value is malformed now, not incomplete.
      if (open.pop() !== (ch === ']' ? '[' : '{')) depth = 0;
      if (depth === 0) {
        open.length = 0;
        values.push(text.slice(start, i + 1));
        start = -1;
      }
    }
  }
  return { values, rest: start >= 0 ? text.slice(start) : '' };
}
