// Every kind of open file stasis knows, in one place. An fd matching none of
// them is refused at dump time with its kind named.
import type { FileKind } from './filekind';
import { regFileKind } from './regfile';
import { pipeKind } from './pipes';
import { eventfdKind } from './eventfd';
import { eventpollKind } from './eventpoll';
import { signalfdKind } from './signalfd';
import { timerfdKind } from './timerfd';
import { inetSocketKind } from './sockets-inet';
import { unixSocketKind } from './sockets-unix';
import { memfdKind } from './memfd';
import { fifoKind } from './fifo';
import { inotifyKind } from './inotify';
import { ttyKind } from './tty';

export const FILE_KINDS: FileKind[] = [
  // memfd before regular files: a memfd is a regular (shmem) file too.
  // Terminals before regular files (some character devices are re-opened by path).
  ttyKind, memfdKind, regFileKind, pipeKind, fifoKind, eventfdKind, eventpollKind, signalfdKind, timerfdKind, inotifyKind, inetSocketKind, unixSocketKind,
];

export function kindOfType(type: number): FileKind | undefined {
  return FILE_KINDS.find((k) => k.type === type);
}
