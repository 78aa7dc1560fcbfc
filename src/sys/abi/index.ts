// The x86-64 Linux ABI: syscall numbers, constants and struct layouts, each
// written once (from the kernel's uapi headers) and used by name everywhere.
export * from './syscalls';
export * from './errno';
export * from './ptrace';
export * from './signal';
export * from './mm';
export * from './fcntl';
export * from './socket';
export * from './process';
export * from './regs';
export * from './structs';
export * from './elf';
export { struct, i32s, u64s, readI32s, type Struct, type StructValue, type StructInput, type FieldType } from './struct';
export * from './ipc';
export * from './mount';
export * from './uffd';
export * from './tty';
export * from './socket-kinds';
