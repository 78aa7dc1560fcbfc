// The digest's file name, alone: the command line's help names it without
// loading the digest code (hashing, its worker) at start-up.
export const DIGEST_FILE = 'stasis-digest';
