// Namespaces of a process, from /proc/PID/ns/*: which differ from ours.
import * as fs from 'node:fs';
import { sys, abi } from '../sys';

const { CLONE } = abi;

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

/**
 * Run `f` with our main thread in `pid`'s namespace of `kind` (net, ipc, uts,
 * cgroup; not mnt or time, which a multi-threaded process cannot enter), and
 * back in ours afterwards, whatever happens. Everything in `f` must be
 * synchronous.
 */
export function inNamespace<T>(pid: number, kind: 'net' | 'ipc' | 'uts' | 'cgroup', f: () => T): T {
  const flag = { net: CLONE.NEWNET, ipc: CLONE.NEWIPC, uts: CLONE.NEWUTS, cgroup: CLONE.NEWCGROUP }[kind];
  const ours = fs.openSync(`/proc/thread-self/ns/${kind}`, 'r');
  try {
    const theirs = fs.openSync(`/proc/${pid}/ns/${kind}`, 'r');
    try {
      sys('setns', theirs, flag, 0, 0, 0, 0, `${kind} namespace of ${pid}`);
    } finally {
      fs.closeSync(theirs);
    }
    try {
      return f();
    } finally {
      sys('setns', ours, flag, 0, 0, 0, 0, `back to our ${kind} namespace`);
    }
  } finally {
    fs.closeSync(ours);
  }
}

/**
 * Run `f` in `pid`'s namespace of `kind` when it is not ours (inNamespace),
 * else here. For what answers per namespace: sock_diag tells only the
 * sockets of the namespace that asks.
 */
export function inNamespaceOf<T>(pid: number, kind: 'net' | 'ipc' | 'uts' | 'cgroup', f: () => T): T {
  return nsId(pid, kind) === nsId('self', kind) ? f() : inNamespace(pid, kind, f);
}
