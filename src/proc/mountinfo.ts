// /proc/PID/mountinfo, parsed (pure): one entry per mount, as proc(5) gives it.
export interface MountInfo {
  id: number;
  parent: number;
  /** "major:minor" of the mounted filesystem. */
  dev: string;
  /** Path of the mount's root within its filesystem. */
  root: string;
  /** Where it is mounted, relative to the reader's root. */
  mountpoint: string;
  /** Per-mount options (rw, nosuid, relatime...). */
  mountOpts: string[];
  /** shared:N, master:N, propagate_from:N, unbindable. */
  optional: string[];
  fstype: string;
  source: string;
  /** Superblock options. */
  superOpts: string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
export function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 4) throw new Error(`unparsable mountinfo line: ${line}`);
    out.push({
      id: Number(f[0]), parent: Number(f[1]), dev: f[2], root: unescapeMount(f[3]), mountpoint: unescapeMount(f[4]),
      mountOpts: f[5].split(','), optional: f.slice(6, sep), fstype: f[sep + 1], source: unescapeMount(f[sep + 2]), superOpts: f[sep + 3].split(','),
    });
  }
  return out;
}

/** criu's kernel dev_t encoding of "major:minor": major << 20 | minor. */
export function kdev(dev: string): number {
  const [maj, min] = dev.split(':').map(Number);
  return ((maj << 20) | min) >>> 0;
}

export function devString(kdevValue: number): string {
  return `${kdevValue >>> 20}:${kdevValue & 0xfffff}`;
}

/** The value of an optional field (shared:N → N), or undefined. */
export function optionalField(m: MountInfo, key: 'shared' | 'master' | 'propagate_from'): number | undefined {
  const f = m.optional.find((o) => o.startsWith(`${key}:`));
  return f ? Number(f.slice(key.length + 1)) : undefined;
}
