// ELF-64 (include/uapi/linux/elf.h): the headers we read (the vdso image) and
// write (the restore stub).
import { struct } from './struct';

export const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EV_CURRENT = 1;
export const ELFOSABI_SYSV = 0;
export const ET = { EXEC: 2, DYN: 3 } as const;
export const EM_X86_64 = 62;
export const PT = { LOAD: 1, DYNAMIC: 2, NOTE: 4, GNU_STACK: 0x6474e551 } as const;
export const PF = { X: 1, W: 2, R: 4 } as const;
export const SHT_NOBITS = 8;

/** Elf64_Ehdr; ident = magic, class, data, version, osabi, then padding. */
export const ELF64_EHDR = struct({
  ident: { bytes: 16 }, type: 'u16', machine: 'u16', version: 'u32', entry: 'u64', phoff: 'u64', shoff: 'u64',
  flags: 'u32', ehsize: 'u16', phentsize: 'u16', phnum: 'u16', shentsize: 'u16', shnum: 'u16', shstrndx: 'u16',
});
/** Elf64_Phdr */
export const ELF64_PHDR = struct({
  type: 'u32', flags: 'u32', offset: 'u64', vaddr: 'u64', paddr: 'u64', filesz: 'u64', memsz: 'u64', align: 'u64',
});
/** Elf64_Shdr */
export const ELF64_SHDR = struct({
  name: 'u32', type: 'u32', flags: 'u64', addr: 'u64', offset: 'u64', size: 'u64', link: 'u32', info: 'u32',
  addralign: 'u64', entsize: 'u64',
});
