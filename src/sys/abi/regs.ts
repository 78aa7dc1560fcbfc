// x86-64 register sets as ptrace returns them.

/**
 * struct user_regs_struct (arch/x86/include/asm/user_64.h): 27 unsigned longs,
 * in this order. NT_PRSTATUS returns exactly this (216 bytes).
 */
export const USER_REGS_FIELDS = [
  'r15', 'r14', 'r13', 'r12', 'rbp', 'rbx', 'r11', 'r10', 'r9', 'r8', 'rax', 'rcx', 'rdx', 'rsi', 'rdi',
  'orig_rax', 'rip', 'cs', 'eflags', 'rsp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const;
export type RegName = (typeof USER_REGS_FIELDS)[number];
export const USER_REGS_SIZE = USER_REGS_FIELDS.length * 8;

/**
 * XSAVE area as returned by NT_X86_XSTATE: the legacy 512-byte FXSAVE region,
 * the 64-byte XSAVE header, then extended components at CPUID-given offsets
 * (the standard format's fixed offsets on x86-64 for the ones we keep).
 */
export const XSAVE = {
  FXSAVE_SIZE: 512,
  HEADER_OFFSET: 512,
  /** XSAVE_HDR: xstate_bv at +0 */
  XSTATE_BV_OFFSET: 512,
  /** In the FXSAVE region, bytes 464..511 are software-reserved; the kernel puts its
   *  sw_reserved (magic1, extended_size, xfeatures, xstate_size) at 464. */
  SW_RESERVED_OFFSET: 464,
  YMM_OFFSET: 576, YMM_SIZE: 256,
  BNDREGS_OFFSET: 960, BNDREGS_SIZE: 64,
  BNDCSR_OFFSET: 1024, BNDCSR_SIZE: 64,
  OPMASK_OFFSET: 1088, OPMASK_SIZE: 64,
  ZMM_H_OFFSET: 1152, ZMM_H_SIZE: 512,
  HI16_ZMM_OFFSET: 1664, HI16_ZMM_SIZE: 1024,
  PKRU_OFFSET: 2688, PKRU_SIZE: 8,
  /** Enough for every component this kernel may report here (2432 seen); 4 KiB is safe. */
  MAX_SIZE: 4096,
} as const;

/** FXSAVE legacy region layout (the parts stored in user_x86_fpregs_entry). */
export const FXSAVE = {
  cwd: 0, swd: 2, twd: 4, fop: 6, rip: 8, rdp: 16, mxcsr: 24, mxcsr_mask: 28,
  st_space: 32, ST_WORDS: 32, xmm_space: 160, XMM_WORDS: 64, padding: 416, PADDING_WORDS: 24,
} as const;
