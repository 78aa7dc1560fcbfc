// System V IPC: commands, flags and the 64-bit descriptor layouts (x86-64).
import { struct } from './struct';

export const IPC = { RMID: 0, SET: 1, STAT: 2, INFO: 3, CREAT: 0o1000, EXCL: 0o2000, NOWAIT: 0o4000, PRIVATE: 0 } as const;
export const MSGCTL = { STAT: 11, INFO: 12, STAT_ANY: 13 } as const;
export const MSG_FLAG = { NOERROR: 0o10000, EXCEPT: 0o20000, COPY: 0o40000 } as const;
export const SEMCTL = { GETALL: 13, SETALL: 17, STAT: 18, INFO: 19, STAT_ANY: 20 } as const;
export const SHMCTL = { STAT: 13, INFO: 14, STAT_ANY: 15 } as const;
export const SHM_FLAG = { RDONLY: 0o10000, RND: 0o20000, REMAP: 0o40000, HUGETLB: 0o4000 } as const;

/** struct ipc64_perm */
export const IPC64_PERM = struct({ key: 'i32', uid: 'u32', gid: 'u32', cuid: 'u32', cgid: 'u32', mode: 'u32', seq: 'u16', pad1: 'u16', unused1: 'u64', unused2: 'u64' });
/** struct msqid64_ds */
export const MSQID64_DS = struct({
  perm: { bytes: 48 }, stime: 'u64', rtime: 'u64', ctime: 'u64', cbytes: 'u64', qnum: 'u64', qbytes: 'u64', lspid: 'i32', lrpid: 'i32', unused4: 'u64', unused5: 'u64',
});
/** struct semid64_ds */
export const SEMID64_DS = struct({ perm: { bytes: 48 }, otime: 'u64', unused1: 'u64', ctime: 'u64', unused2: 'u64', nsems: 'u64', unused3: 'u64', unused4: 'u64' });
/** struct shmid64_ds */
export const SHMID64_DS = struct({
  perm: { bytes: 48 }, segsz: 'u64', atime: 'u64', dtime: 'u64', ctime: 'u64', cpid: 'i32', lpid: 'i32', nattch: 'u64', unused4: 'u64', unused5: 'u64',
});
/** Room for struct msginfo / seminfo / shm_info (we only use the calls' return value). */
export const IPC_INFO_SIZE = 128;
