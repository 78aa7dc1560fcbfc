// IPC namespace of its own: its limits (kernel.msg*, sem, shm*, fs.mqueue.*)
// and its System V objects — message queues with their messages (read with
// MSG_COPY, nothing taken), semaphore sets with their values, shared memory
// segments with their contents — in criu's images (ipcns-var/-msg/-sem/-shm-ID,
// segment contents as shmem pages like memfd's). Read and re-created from our
// main thread entered into the tree's namespace (setns), objects with their
// ids (the *_next_id sysctls). POSIX message queues are not carried.
import * as fs from 'node:fs';
import { childProcess } from '../../node-lazy';
import { abi, sys, sysTry, addressOf, processVmReadv, processVmWritev } from '../../sys';
import { inNamespace } from '../../proc/ns';
import { parts, framed, ImageCursor, type Msg, type Part } from '../../images/image';
import { PE } from '../../images/criu';
import { StasisError, ErrorCodes } from '../../errors';
import { defineUnit } from '../../unit/unit';
import type { DumpCtx } from '../../unit/dump-ctx';
import type { Loading } from '../../unit/checkpoint';
import { namespacesUnit } from './namespaces';
import { pagemapPages } from '../../images/pagemap';

const { IPC, MSGCTL, MSG_FLAG, SEMCTL, SHMCTL, SHM_FLAG, IPC64_PERM, MSQID64_DS, SEMID64_DS, SHMID64_DS, IPC_INFO_SIZE, PAGE_SIZE, ERRNO } = abi;
type Desc = Msg<'ipc_desc_entry'>;

const K = '/proc/sys/kernel/', MQ = '/proc/sys/fs/mqueue/';
const readNum = (f: string) => BigInt(fs.readFileSync(f, 'utf8').trim());
const readOpt = (f: string) => { try { return Number(readNum(f)); } catch { return undefined; } };

function dumpVars(): Msg<'ipc_var_entry'> {
  const n = (f: string) => Number(readNum(f));
  const next = (f: string) => { const v = readOpt(K + f); return v === undefined || v < 0 ? undefined : v; };
  return {
    sem_ctls: fs.readFileSync(K + 'sem', 'utf8').trim().split(/\s+/).map(Number),
    msg_ctlmax: n(K + 'msgmax'), msg_ctlmnb: n(K + 'msgmnb'), msg_ctlmni: n(K + 'msgmni'), auto_msgmni: readOpt(K + 'auto_msgmni') ?? 0,
    shm_ctlmax: readNum(K + 'shmmax'), shm_ctlall: readNum(K + 'shmall'), shm_ctlmni: n(K + 'shmmni'), shm_rmid_forced: n(K + 'shm_rmid_forced'),
    mq_queues_max: n(MQ + 'queues_max'), mq_msg_max: n(MQ + 'msg_max'), mq_msgsize_max: n(MQ + 'msgsize_max'),
    mq_msg_default: readOpt(MQ + 'msg_default'), mq_msgsize_default: readOpt(MQ + 'msgsize_default'),
    msg_next_id: next('msg_next_id'), sem_next_id: next('sem_next_id'), shm_next_id: next('shm_next_id'),
  };
}

function desc(perm: Buffer, id: number): Desc {
  const p = IPC64_PERM.decode(perm);
  return { key: p.key >>> 0, uid: p.uid, gid: p.gid, cuid: p.cuid, cgid: p.cgid, mode: p.mode & 0o777, id };
}

/** Every object of one kind: STAT_ANY over every index up to what INFO says is the highest in use. */
function eachObject(call: 'msgctl' | 'semctl' | 'shmctl', info: number, stat: number, size: number, f: (id: number, ds: Buffer) => void): void {
  const b = Buffer.alloc(Math.max(size, IPC_INFO_SIZE));
  const args = (i: number, cmd: number) => (call === 'semctl' ? [i, 0, cmd, addressOf(b)] as const : [i, cmd, addressOf(b)] as const);
  const max = sys(call, ...args(0, info));
  for (let i = 0; i <= max; i++) {
    const id = sysTry(call, ...args(i, stat));
    if (id === -ERRNO.EINVAL) continue; // a free index
    if (id < 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `System V IPC: ${call} index ${i}: errno ${-id}`);
    f(id, Buffer.from(b.subarray(0, size)));
  }
}

const pad8 = (n: number) => (n + 7) & ~7;

function dumpMsgs(msgmax: number): Part[] {
  const out: Part[] = [];
  eachObject('msgctl', MSGCTL.INFO, MSGCTL.STAT_ANY, MSQID64_DS.size, (id, raw) => {
    const ds = MSQID64_DS.decode(raw);
    const msgs: Buffer[] = [];
    const buf = Buffer.alloc(8 + msgmax);
    for (let i = 0; i < Number(ds.qnum); i++) {
      const n = sys('msgrcv', id, addressOf(buf), msgmax, i, IPC.NOWAIT | MSG_FLAG.COPY | MSG_FLAG.NOERROR);
      const text = Buffer.alloc(pad8(n));
      buf.copy(text, 0, 8, 8 + n);
      msgs.push(framed('ipc_msg', { mtype: buf.readBigUInt64LE(0), msize: n }), text);
    }
    out.push({ msg: 'ipc_msg_entry', entry: { desc: desc(ds.perm, id), qbytes: Number(ds.qbytes), qnum: Number(ds.qnum) }, payload: Buffer.concat(msgs) });
  });
  return out;
}

function dumpSems(): Part[] {
  const out: Part[] = [];
  eachObject('semctl', SEMCTL.INFO, SEMCTL.STAT_ANY, SEMID64_DS.size, (id, raw) => {
    const ds = SEMID64_DS.decode(raw);
    const vals = Buffer.alloc(pad8(Number(ds.nsems) * 2));
    sys('semctl', id, 0, SEMCTL.GETALL, addressOf(vals));
    out.push({ msg: 'ipc_sem_entry', entry: { desc: desc(ds.perm, id), nsems: Number(ds.nsems) }, payload: vals });
  });
  return out;
}

/** A segment's contents as shmem pages (pagemap-shmem-ID.img, as memfd contents are). */
function dumpShms(ctx: DumpCtx): Part[] {
  const out: Part[] = [];
  eachObject('shmctl', SHMCTL.INFO, SHMCTL.STAT_ANY, SHMID64_DS.size, (id, raw) => {
    const ds = SHMID64_DS.decode(raw);
    const size = Number(ds.segsz);
    const at = BigInt.asUintN(64, BigInt(sys('shmat', id, 0, SHM_FLAG.RDONLY)));
    const pagesId = ctx.allocPagesId();
    const entries: Msg<'pagemap_entry'>[] = [];
    const out2 = ctx.out.create(`pages-${pagesId}.img`);
    try {
      const page = Buffer.alloc(PAGE_SIZE);
      for (let off = 0; off < size; off += PAGE_SIZE) {
        page.fill(0);
        processVmReadv(process.pid, at + BigInt(off), page, Math.min(PAGE_SIZE, size - off));
        if (page.every((b) => b === 0)) continue;
        out2.write(page);
        const last = entries[entries.length - 1];
        if (last && Number(last.vaddr) + last.nr_pages * PAGE_SIZE === off) last.nr_pages++;
        else entries.push({ vaddr: BigInt(off), nr_pages: 1, flags: PE.PRESENT });
      }
    } finally {
      out2.close();
      sys('shmdt', at);
    }
    ctx.write(`pagemap-shmem-${id}.img`, 'PAGEMAP', [{ msg: 'pagemap_head', entry: { pages_id: pagesId } }, ...parts('pagemap_entry', entries)]);
    out.push({ msg: 'ipc_shm_entry', entry: { desc: desc(ds.perm, id), size: BigInt(size), in_pagemaps: true } });
  });
  return out;
}

interface Loaded {
  vars: Msg<'ipc_var_entry'>;
  msgs: { entry: Msg<'ipc_msg_entry'>; messages: { mtype: bigint; text: Buffer }[] }[];
  sems: { entry: Msg<'ipc_sem_entry'>; values: Buffer }[];
  shms: { entry: Msg<'ipc_shm_entry'>; pages: { offset: number; data: Buffer }[] }[];
}

function loadIpc(ld: Loading, nsid: number): Loaded {
  const vars = ld.images.one(`ipcns-var-${nsid}.img`, 'IPC_VAR', 'ipc_var_entry');
  const cursor = (file: string, kind: 'IPCNS_MSG' | 'IPCNS_SEM') => new ImageCursor(ld.images.path(file), ld.images.raw(file), kind);
  const msgs: Loaded['msgs'] = [];
  for (const c = cursor(`ipcns-msg-${nsid}.img`, 'IPCNS_MSG'); !c.done;) {
    const entry = c.entry('ipc_msg_entry');
    const messages = Array.from({ length: entry.qnum }, () => {
      const m = c.entry('ipc_msg');
      return { mtype: m.mtype, text: c.bytes(pad8(m.msize)).subarray(0, m.msize) };
    });
    msgs.push({ entry, messages });
  }
  const sems: Loaded['sems'] = [];
  for (const c = cursor(`ipcns-sem-${nsid}.img`, 'IPCNS_SEM'); !c.done;) {
    const entry = c.entry('ipc_sem_entry');
    sems.push({ entry, values: c.bytes(pad8(entry.nsems * 2)).subarray(0, entry.nsems * 2) });
  }
  const shms = ld.images.read(`ipcns-shm-${nsid}.img`, 'IPCNS_SHM', 'ipc_shm_entry').map((entry) => {
    if (!entry.in_pagemaps) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`ipcns-shm-${nsid}.img`)}: segment ${entry.desc.id}: contents not in pagemaps (old format); not supported`);
    const pm = ld.images.withHead(`pagemap-shmem-${entry.desc.id}.img`, 'PAGEMAP', 'pagemap_head', 'pagemap_entry');
    const data = ld.images.raw(`pages-${pm.head.pages_id}.img`);
    let off = 0;
    const pmPath = ld.images.path(`pagemap-shmem-${entry.desc.id}.img`);
    const pages = pm.entries.map((e) => {
      const len = pagemapPages(e, pmPath) * PAGE_SIZE;
      if (off + len > data.length || Number(e.vaddr) + len > Number(entry.size) + PAGE_SIZE) throw new StasisError(ErrorCodes.BAD_IMAGE, `${ld.images.path(`pagemap-shmem-${entry.desc.id}.img`)}: pages beyond the segment or the pages file`);
      const p = { offset: Number(e.vaddr), data: data.subarray(off, off + len) };
      off += len;
      return p;
    });
    return { entry, pages };
  });
  return { vars, msgs, sems, shms };
}

/** Write a sysctl of the namespace we are in; a refusal names the file and the value. */
function sysctl(f: string, x: unknown): void {
  if (x === undefined) return;
  try {
    fs.writeFileSync(f, String(x));
  } catch (e) {
    throw new StasisError(ErrorCodes.RESTORE_FAILED, `cannot set ${f.replace('/proc/sys/', '').replace(/\//g, '.')} to ${x} in the tree's IPC namespace: ${(e as NodeJS.ErrnoException).code}`);
  }
}

function writeVars(v: Msg<'ipc_var_entry'>, except: ('msgmnb')[] = []): void {
  const w = sysctl;
  w(K + 'sem', (v.sem_ctls ?? []).join(' '));
  w(K + 'msgmax', v.msg_ctlmax);
  if (!except.includes('msgmnb')) w(K + 'msgmnb', v.msg_ctlmnb);
  w(K + 'msgmni', v.msg_ctlmni);
  w(K + 'shmmax', v.shm_ctlmax); w(K + 'shmall', v.shm_ctlall); w(K + 'shmmni', v.shm_ctlmni);
  w(MQ + 'queues_max', v.mq_queues_max); w(MQ + 'msg_max', v.mq_msg_max); w(MQ + 'msgsize_max', v.mq_msgsize_max);
  w(MQ + 'msg_default', v.mq_msg_default); w(MQ + 'msgsize_default', v.mq_msgsize_default);
}

/** IPC_SET the owner and mode of an object; created by us, it is ours until then. */
function setOwner(call: 'msgctl' | 'semctl' | 'shmctl', id: number, stat: Buffer, d: Desc, qbytes?: number): void {
  const set = Buffer.from(stat);
  IPC64_PERM.encode({ ...IPC64_PERM.decode(set), uid: d.uid, gid: d.gid, mode: d.mode }, set, 0);
  if (qbytes !== undefined) set.writeBigUInt64LE(BigInt(qbytes), MSQID64_DS.offsets.qbytes);
  if (call === 'semctl') sys('semctl', id, 0, IPC.SET, addressOf(set));
  else sys(call, id, IPC.SET, addressOf(set));
}

/** Create an object with its dumped id: the kernel allocates the id written in *_next_id. */
function withId(nextIdFile: string, want: number, create: () => number, what: string): number {
  sysctl(K + nextIdFile, want);
  const id = create();
  if (id !== want) throw new StasisError(ErrorCodes.RESTORE_FAILED, `System V ${what} came back with id ${id}, not ${want}`);
  return id;
}

function restoreIpc(l: Loaded): void {
  const maxQbytes = Math.max(l.vars.msg_ctlmnb, ...l.msgs.map((m) => m.entry.qbytes));
  // A queue may hold more than msgmnb (raised with CAP_SYS_RESOURCE): raise the namespace's limit meanwhile.
  writeVars(l.vars, ['msgmnb']);
  sysctl(K + 'msgmnb', maxQbytes);
  for (const { entry: e, messages } of l.msgs) {
    const id = withId('msg_next_id', e.desc.id, () => sys('msgget', e.desc.key, e.desc.mode | IPC.CREAT | IPC.EXCL), `message queue ${e.desc.id}`);
    for (const m of messages) {
      const b = Buffer.alloc(8 + m.text.length);
      b.writeBigUInt64LE(m.mtype, 0);
      m.text.copy(b, 8);
      sys('msgsnd', id, addressOf(b), m.text.length, IPC.NOWAIT);
    }
    const st = Buffer.alloc(MSQID64_DS.size);
    sys('msgctl', id, IPC.STAT, addressOf(st));
    setOwner('msgctl', id, st, e.desc, e.qbytes);
  }
  sysctl(K + 'msgmnb', l.vars.msg_ctlmnb);
  for (const { entry: e, values } of l.sems) {
    const id = withId('sem_next_id', e.desc.id, () => sys('semget', e.desc.key, e.nsems, e.desc.mode | IPC.CREAT | IPC.EXCL), `semaphore set ${e.desc.id}`);
    sys('semctl', id, 0, SEMCTL.SETALL, addressOf(Buffer.from(values)));
    const st = Buffer.alloc(SEMID64_DS.size);
    sys('semctl', id, 0, IPC.STAT, addressOf(st));
    setOwner('semctl', id, st, e.desc);
  }
  for (const { entry: e, pages } of l.shms) {
    const id = withId('shm_next_id', e.desc.id, () => sys('shmget', e.desc.key, e.size, e.desc.mode | IPC.CREAT | IPC.EXCL), `shared memory segment ${e.desc.id}`);
    const at = BigInt.asUintN(64, BigInt(sys('shmat', id, 0, 0)));
    try {
      for (const p of pages) processVmWritev(process.pid, at + BigInt(p.offset), p.data, Math.min(p.data.length, Number(e.size) - p.offset));
    } finally {
      sys('shmdt', at);
    }
    const st = Buffer.alloc(SHMID64_DS.size);
    sys('shmctl', id, IPC.STAT, addressOf(st));
    setOwner('shmctl', id, st, e.desc);
  }
  // Segments nobody attaches would go with their creator (us) under shm_rmid_forced: set last.
  sysctl(K + 'shm_rmid_forced', l.vars.shm_rmid_forced);
  // Unset (-1) after every allocation: only a pending value is written back.
  const next = (f: string, v: number | undefined) => sysctl(K + f, v);
  next('msg_next_id', l.vars.msg_next_id); next('sem_next_id', l.vars.sem_next_id); next('shm_next_id', l.vars.shm_next_id);
}

/**
 * The POSIX message queues of pid's IPC namespace: an mqueue filesystem
 * mounted in a throwaway mount namespace entered into it lists them (the
 * tree's own mounts need not show one).
 */
function posixQueues(pid: number): string[] {
  const script = 'd=$(mktemp -d) && mount -t mqueue stasis "$d" && ls -A "$d"; s=$?; umount "$d"; rmdir "$d"; exit $s';
  const r = childProcess().spawnSync('nsenter', [`--ipc=/proc/${pid}/ns/ipc`, 'unshare', '--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0) throw new StasisError(ErrorCodes.UNSUPPORTED, `cannot list the POSIX message queues of pid ${pid}'s IPC namespace: ${(r.stderr || r.error?.message || '').trim()}`);
  return r.stdout.split('\n').filter(Boolean);
}

export const ipcUnit = defineUnit({
  name: 'ipc',
  dumpPhases: [{
    name: 'ipc', after: ['namespaces'], before: ['parasite'],
    once(ctx) {
      if (!ctx.state(namespacesUnit).own.has('ipc')) return;
      const root = ctx.processes[0];
      const nsid = root.ids.ipc_ns_id!;
      const queues = posixQueues(root.pid);
      if (queues.length) throw new StasisError(ErrorCodes.UNSUPPORTED, `pid ${root.pid}'s IPC namespace holds POSIX message queues (${queues.join(', ')}); not supported`);
      inNamespace(root.pid, 'ipc', () => {
        const vars = dumpVars();
        ctx.write(`ipcns-var-${nsid}.img`, 'IPC_VAR', parts('ipc_var_entry', [vars]));
        ctx.write(`ipcns-msg-${nsid}.img`, 'IPCNS_MSG', dumpMsgs(vars.msg_ctlmax));
        ctx.write(`ipcns-sem-${nsid}.img`, 'IPCNS_SEM', dumpSems());
        ctx.write(`ipcns-shm-${nsid}.img`, 'IPCNS_SHM', dumpShms(ctx));
      });
    },
  }],
  loadAfter: ['namespaces'],
  load: (ld) => (ld.loaded(namespacesUnit).has('ipc') ? loadIpc(ld, ld.processes[0].ids.ipc_ns_id!) : undefined),
  restorePhases: [{
    name: 'ipc', stage: 'root',
    once(ctx, l) {
      if (!l) return;
      const root = ctx.tasks.values().next().value!;
      inNamespace(root.task.pid, 'ipc', () => restoreIpc(l));
    },
  }],
});
