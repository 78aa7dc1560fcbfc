// A network namespace that outlives the tree (a container runtime's: podman
// keeps it under /run/netns, runc is given its path): not carried, named by a
// key, and joined on restore, in criu's shapes. Dump: `--external
// net[INODE]:KEY` (what runc passes criu), written as netns_entry.ext_key
// with nothing else of the namespace. Restore: `--inherit-fd fd[N]:KEY` (our
// fd N is that namespace, as runc hands it to criu) or `--join-ns net:PATH`;
// the stub enters it and the root is born there instead of in a new one.
import * as fs from 'node:fs';
import { StasisError, ErrorCodes } from '../../errors';
import { abi, sysTry } from '../../sys';

/** Dump: the key of `--external net[INODE]:KEY` for the tree's net namespace inode, if given. */
export function externalNetKey(specs: readonly string[], inode: number | undefined): string | undefined {
  let key: string | undefined;
  for (const s of specs) {
    const m = /^net\[(\d+)\]:(.+)$/.exec(s);
    if (!s.startsWith('net[')) continue;
    if (!m) throw new StasisError(ErrorCodes.USAGE, `--external ${s}: expected net[INODE]:KEY`);
    if (Number(m[1]) !== inode) throw new StasisError(ErrorCodes.USAGE, `--external ${s}: the tree's network namespace is ${inode === undefined ? 'not its own' : `net:[${inode}]`}, not net:[${m[1]}]`);
    key = m[2];
  }
  return key;
}

/** Restore: the file that stands for the external namespace `key`, from --inherit-fd or --join-ns; undefined if neither names it. */
export function externalNetPath(key: string, inheritFd: readonly string[] = [], joinNs: readonly string[] = []): string | undefined {
  for (const s of inheritFd) {
    const m = /^fd\[(\d+)\]:(.+)$/.exec(s);
    if (!m) throw new StasisError(ErrorCodes.USAGE, `--inherit-fd ${s}: expected fd[N]:KEY`);
    if (m[2] === key) return `/proc/${process.pid}/fd/${m[1]}`;
  }
  for (const s of joinNs) {
    const m = /^(\w+):(.+)$/.exec(s);
    if (!m) throw new StasisError(ErrorCodes.USAGE, `--join-ns ${s}: expected KIND:PATH`);
    if (m[1] !== 'net') throw new StasisError(ErrorCodes.USAGE, `--join-ns ${s}: only a network namespace can be joined`);
    return /^\d+$/.test(m[2]) ? `/proc/${m[2]}/ns/net` : m[2];
  }
  return undefined;
}

/** Checks that `file` is a network namespace; returns its inode. */
export function checkNetNs(file: string, what: string): number {
  let fd: number;
  try { fd = fs.openSync(file, 'r'); } catch (e) {
    throw new StasisError(ErrorCodes.USAGE, `${what}: ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    if (sysTry('ioctl', fd, abi.NS_GET_NSTYPE) !== abi.CLONE.NEWNET) throw new StasisError(ErrorCodes.USAGE, `${what}: ${file} is not a network namespace`);
    return fs.fstatSync(fd).ino;
  } finally { fs.closeSync(fd); }
}
