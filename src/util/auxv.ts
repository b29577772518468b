/**
 * What the kernel told this process at exec (the auxiliary vector): the page size and clock tick,
 * read rather than assumed (pages are 16 or 64 KiB on some arm64 and ppc64 kernels). Used by the
 * cgroups layer and the drivers' /proc toolkit alike.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';

const AT_PAGESZ = 6;
const AT_CLKTCK = 17;

/** Reads one entry of this process's auxiliary vector, or undefined. */
export function auxv(type: number): number | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync('/proc/self/auxv');
  } catch {
    return undefined;
  }
  const word = process.arch === 'arm' || process.arch === 'ia32' ? 4 : 8;
  const le = os.endianness() === 'LE';
  const read = (off: number): number => word === 4
    ? (le ? buf.readUInt32LE(off) : buf.readUInt32BE(off))
    : Number(le ? buf.readBigUInt64LE(off) : buf.readBigUInt64BE(off));
  for (let off = 0; off + 2 * word <= buf.length; off += 2 * word) {
    const t = read(off);
    if (t === 0) break; // AT_NULL
    if (t === type) return read(off + word);
  }
  return undefined;
}

/** USER_HZ: the unit of utime/stime/starttime in /proc/<pid>/stat (100 on every common ABI). */
export const CLK_TCK = auxv(AT_CLKTCK) || 100;
/** Bytes per page (4 KiB on x86-64, 16 or 64 KiB on some arm64 and ppc64 kernels). */
export const PAGE_SIZE = auxv(AT_PAGESZ) || 4096;
