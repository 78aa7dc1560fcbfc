// Every resource unit stasis knows, listed once. Order here means nothing:
// phases are ordered by what they declare (after/before), file kinds match
// mutually exclusive sets of fds, loads by their loadAfter.
import type { AnyUnit } from '../unit/unit';
import { filesUnit, registerFileKinds } from './files';
import { regFileUnit } from './regfile';
import { memoryUnit } from './memory';
import { memfdUnit } from './memfd';
import { coreUnit } from './core';
import { signalsUnit } from './signals';
import { timersUnit } from './timers';
import { rlimitsUnit } from './rlimits';
import { fsUnit } from './fs';
import { credsUnit } from './creds';
import { pipeUnit } from './pipes';
import { fifoUnit } from './fifo';
import { eventfdUnit } from './eventfd';
import { pidfdUnit } from './pidfd';
import { eventpollUnit } from './eventpoll';
import { signalfdUnit } from './signalfd';
import { timerfdUnit } from './timerfd';
import { inotifyUnit } from './inotify';
import { ttyUnit } from './tty';
import { skQueuesUnit } from './sockqueue';
import { scmRightsUnit } from './scm-rights';
import { inetSocketUnit } from './sockets-inet';
import { unixSocketUnit } from './sockets-unix';
import { packetSocketUnit } from './sockets-packet';
import { netlinkSocketUnit } from './sockets-netlink';
import { fileLocksUnit } from './file-locks';
import { namespacesUnit } from './ns/namespaces';
import { utsUnit } from './ns/uts';
import { timeUnit } from './ns/time';
import { ipcUnit } from './ns/ipc';
import { mntUnit } from './ns/mnt';
import { netUnit } from './ns/net';
import { cgroupUnit } from './ns/cgroup';
import { seccompUnit } from './seccomp';
import { schedUnit } from './sched';
import { threadAttrsUnit } from './thread-attrs';
import { taskMiscUnit } from './task-misc';
import { netlockUnit } from './netlock';

export const UNITS: readonly AnyUnit[] = [
  coreUnit, credsUnit, memoryUnit, filesUnit, fsUnit, signalsUnit, timersUnit, rlimitsUnit,
  regFileUnit, memfdUnit, pipeUnit, fifoUnit, eventfdUnit, pidfdUnit, eventpollUnit, signalfdUnit, timerfdUnit, inotifyUnit, ttyUnit,
  skQueuesUnit, scmRightsUnit, inetSocketUnit, unixSocketUnit, packetSocketUnit, netlinkSocketUnit, fileLocksUnit, netlockUnit,
  namespacesUnit, utsUnit, timeUnit, ipcUnit, mntUnit, netUnit, cgroupUnit, seccompUnit, schedUnit, threadAttrsUnit, taskMiscUnit,
];

registerFileKinds([...UNITS]);
