// Namespaces of a process, from /proc/PID/ns/*: which differ from ours.
import * as fs from 'node:fs';

export const NS_KINDS = ['pid', 'pid_for_children', 'mnt', 'net', 'uts', 'ipc', 'cgroup', 'time', 'time_for_children', 'user'] as const;
export type NsKind = (typeof NS_KINDS)[number];

export const NS_NAMES: Record<NsKind, string> = {
  pid: 'pid', pid_for_children: 'pid (for its children)', mnt: 'mount', net: 'network', uts: 'UTS',
  ipc: 'IPC', cgroup: 'cgroup', time: 'time', time_for_children: 'time (for its children)', user: 'user',
};

/** "net:[4026531833]" → 4026531833, or undefined when the kernel has no such namespace. */
export function nsId(pid: number | 'self', kind: NsKind): number | undefined {
  try {
    const m = /\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/ns/${kind}`));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Namespaces of `pid` that are not ours, with their ids. */
export function foreignNamespaces(pid: number): { kind: NsKind; id: number }[] {
  const out: { kind: NsKind; id: number }[] = [];
  for (const kind of NS_KINDS) {
    const theirs = nsId(pid, kind), ours = nsId('self', kind);
    if (theirs !== undefined && ours !== undefined && theirs !== ours) out.push({ kind, id: theirs });
  }
  return out;
}
