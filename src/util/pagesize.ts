/** The kernel's page size, from the process's auxiliary vector (AT_PAGESZ), not assumed to be 4096. */
import * as fs from 'node:fs';
import * as os from 'node:os';

const AT_PAGESZ = 6n;
let cached: number | undefined;

/** Bytes per page (4096 on x86_64, 16 or 64 KiB on some arm64/ppc64 kernels). Falls back to 4096 when /proc is unreadable. */
export function pageSize(): number {
  if (cached !== undefined) return cached;
  cached = 4096;
  try {
    // auxv: pairs of native-endian unsigned longs (type, value), ended by AT_NULL.
    const b = fs.readFileSync('/proc/self/auxv');
    const le = os.endianness() === 'LE';
    const word = (off: number) => (le ? b.readBigUInt64LE(off) : b.readBigUInt64BE(off));
    for (let off = 0; off + 16 <= b.length; off += 16) {
      const type = word(off);
      if (type === 0n) break;
      if (type === AT_PAGESZ) {
        cached = Number(word(off + 8));
        break;
      }
    }
  } catch { /* keep the fallback */ }
  return cached;
}
