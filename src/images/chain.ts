// Chains of checkpoints (pre-dumps, incremental dumps). A dump made with
// --prev-images-dir has a `parent` symbolic link (relative, as criu makes it)
// to the previous images directory, and pagemap entries flagged PE_PARENT
// whose pages lie in that parent (or in its parent, and so on). stasis also
// pins the parent: `stasis-parent` (listed in the child's digest) holds the
// SHA-256 of the parent's own digest, so a verified child verifies its whole
// chain, and a parent replaced by another checkpoint is refused.
//
// A chain is checked whole before anything is created: every link present
// and a directory we trust, no cycle, each parent's files against its digest
// and against the pin.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StasisError, ErrorCodes } from '../errors';
import { checkDirTrust, PARENT_LINK } from './dir';

export { PARENT_LINK };
import { ImageReader } from './image';
import { DIGEST_FILE, sha256, verifyImages } from './digest';

export const PARENT_PIN = 'stasis-parent';
/** Longer chains are refused (criu has no limit; a loop of links would otherwise be followed far). */
export const MAX_CHAIN = 64;

function bad(msg: string): StasisError {
  return new StasisError(ErrorCodes.BAD_IMAGE, msg);
}

/** Where `dir`'s parent link points (resolved), or undefined without one. */
export function parentDirOf(dir: string): string | undefined {
  const link = path.join(dir, PARENT_LINK);
  let st: fs.Stats;
  try { st = fs.lstatSync(link); } catch { return undefined; }
  if (!st.isSymbolicLink()) throw bad(`${link}: not a symbolic link (a parent images directory is named by a link)`);
  return path.resolve(dir, fs.readlinkSync(link));
}

/** The parent directory itself: present, a directory, ours. */
function checkParentDir(child: string, parent: string): void {
  let st: fs.Stats;
  try { st = fs.statSync(parent); } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw bad(`${path.join(child, PARENT_LINK)}: the parent images directory ${parent} ${code === 'ENOENT' ? 'does not exist' : `cannot be read (${code})`}`);
  }
  if (!st.isDirectory()) throw bad(`${path.join(child, PARENT_LINK)}: ${parent} is not a directory`);
  checkDirTrust(parent, st);
}

export interface ChainLink {
  dir: string;
  images: ImageReader;
}

/**
 * The parents of `dir`, nearest first, each checked (see the top of this
 * file). `verify`: each parent's files against its digest and the pin of its
 * child (`images` is then limited to the files its digest lists); `deferChunks`:
 * their pages files' chunks as they are read (lazy restore).
 */
export function openParents(dir: string, opts: { anyOwner?: boolean; verify: boolean; deferChunks?: boolean }): ChainLink[] {
  const out: ChainLink[] = [];
  const seen = new Set<string>([fs.realpathSync(dir)]);
  for (let child = dir, parent = parentDirOf(dir); parent !== undefined; child = parent, parent = parentDirOf(parent)) {
    checkParentDir(child, parent);
    const real = fs.realpathSync(parent);
    if (seen.has(real)) throw bad(`${path.join(child, PARENT_LINK)}: the chain of parent images directories loops back to ${real}`);
    seen.add(real);
    if (out.length >= MAX_CHAIN) throw bad(`${dir}: more than ${MAX_CHAIN} parent images directories`);
    let images: ImageReader;
    if (opts.verify) {
      const listing = verifyImages(parent, opts.anyOwner, opts.deferChunks);
      const childImages = new ImageReader(child, opts.anyOwner ? null : undefined);
      checkPin(childImages, parent);
      images = new ImageReader(parent, opts.anyOwner ? null : undefined, listing);
    } else {
      images = new ImageReader(parent, opts.anyOwner ? null : undefined);
    }
    if (!images.exists('inventory.img')) throw bad(`${images.path('inventory.img')}: missing: the parent images directory holds no complete pre-dump or dump`);
    out.push({ dir: parent, images });
  }
  return out;
}

/** The pin a child gets for `parentDir` (its digest's SHA-256), or undefined when the parent has no digest (criu's images). */
export function pinOf(parentDir: string): string | undefined {
  const reader = new ImageReader(parentDir);
  if (!reader.exists(DIGEST_FILE)) return undefined;
  return sha256(reader.raw(DIGEST_FILE));
}

function checkPin(child: ImageReader, parentDir: string): void {
  const where = child.path(PARENT_PIN);
  if (!child.exists(PARENT_PIN)) throw new StasisError(ErrorCodes.CORRUPT, `${where}: missing, so the parent images directory ${parentDir} cannot be verified (--no-verify restores without verifying)`);
  const want = child.raw(PARENT_PIN).toString('latin1').trim();
  const got = pinOf(parentDir);
  if (got !== want) throw new StasisError(ErrorCodes.CORRUPT, `${parentDir}: not the parent this checkpoint was made on (its ${DIGEST_FILE} does not match ${where})`);
}
