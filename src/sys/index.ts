export * as abi from './abi';
export * as ptrace from './ptrace';
export { wait4, tryWait4, decodeStatus, isEventStop, isGroupStop, describe as describeWait, type WaitStatus } from './wait';
export * from './process';
export { sys, sysTry, sysBig } from './call';
export { addressOf } from './native';
export { pipe, waitReadable } from './pipe';
export type { Regs } from './ptrace';
export { socketpair, sendPacket, recvPacket, peerCred, socketType, pollOne, shutdownSocket, type Packet } from './socket';
