// OCI bundles for container tests (runc directly, runc and podman through
// bin/criu): a root filesystem of one static busybox (Debian's
// busybox-static), a config.json from `runc spec` with what the test asks,
// containers run by runc with ids unique to this test run.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

export interface BundleOptions {
  /** The container's command. */
  args: string[];
  /** Host directories bound into the container: destination → source. */
  binds?: Record<string, string>;
  hostname?: string;
  /** Share the host's network namespace (no network namespace of its own). */
  hostNetwork?: boolean;
  /** A writable root filesystem (runc spec's default is read-only). */
  writableRoot?: boolean;
}

/** Runs a command; throws with its output if it fails. */
function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: status ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** A rootfs with Debian's busybox-static and its applets (sh, nc, cat, sleep...). */
export function busyboxRootfs(dir: string): string {
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => fs.existsSync(p));
  if (!busybox) throw new Error('busybox-static is not installed (.ci/run installs it)');
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'data']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(busybox, path.join(dir, 'bin', 'busybox'));
  fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  // Run in the new root: it only works if the binary is static.
  run('chroot', [dir, '/bin/busybox', '--install', '-s', '/bin']);
  return dir;
}

/** An OCI bundle at dir from `runc spec`: busybox rootfs, no terminal, NOFILE 1024 (no CAP_SYS_RESOURCE here), then what `o` asks. */
export function makeBundle(dir: string, o: BundleOptions): string {
  fs.mkdirSync(dir, { recursive: true });
  busyboxRootfs(path.join(dir, 'rootfs'));
  run('runc', ['spec'], { cwd: dir });
  const cfgPath = path.join(dir, 'config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  cfg.process.terminal = false;
  cfg.process.args = o.args;
  if (o.hostname) cfg.hostname = o.hostname;
  // Root here lacks CAP_SYS_RESOURCE: a container may not be given more than we have.
  cfg.process.rlimits = [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }];
  if (o.writableRoot) cfg.root.readonly = false;
  for (const [dest, src] of Object.entries(o.binds ?? {})) {
    fs.mkdirSync(path.join(dir, 'rootfs', dest), { recursive: true });
    cfg.mounts.push({ destination: dest, type: 'bind', source: src, options: ['rbind', 'rw'] });
  }
  if (o.hostNetwork) cfg.linux.namespaces = cfg.linux.namespaces.filter((n: { type: string }) => n.type !== 'network');
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  return dir;
}

/** A busybox shell counting into /data/count, every `period` seconds. */
export function counterArgs(period: number): string[] {
  return ['sh', '-c', `i=0; while true; do i=$((i+1)); echo $i > /data/count; sleep ${period}; done`];
}

/** What a counter (counterArgs) last wrote into dir/count; 0 before it wrote. */
export function countIn(dir: string): number {
  return Number(fs.readFileSync(path.join(dir, 'count'), 'utf8').trim() || 0);
}

/** A container id no other run of the tests uses. */
export function containerId(name: string): string {
  return `stasis-${name}-${process.pid}-${Date.now().toString(36)}`;
}

/** `runc run -d` with stdio on /dev/null; the pid of the container's init. */
export function runDetached(bundle: string, id: string): number {
  const pidFile = path.join(bundle, `${id}.pid`);
  // Its stdio are ours (runc -d hands them over): /dev/null, or we would wait on pipes it holds.
  const r = spawnSync('runc', ['run', '-d', '--pid-file', pidFile, '-b', bundle, id], { stdio: 'ignore', timeout: 60000 });
  if (r.status !== 0) throw new Error(`runc run -d ${id}: status ${r.status}${r.error ? ` (${r.error.message})` : ''}`);
  return Number(fs.readFileSync(pidFile, 'utf8').trim());
}

/** runc's view of a container: its status, or undefined once runc does not know it. */
export function runcStatus(id: string): string | undefined {
  const r = spawnSync('runc', ['state', id], { encoding: 'utf8' });
  return r.status === 0 ? JSON.parse(r.stdout).status : undefined;
}

/** Forget a container (killing what runc still knows of it). */
export function runcDelete(id: string): void {
  spawnSync('runc', ['delete', '-f', id], { stdio: 'ignore' });
}

/** The cgroup directories (v1 hierarchies and v2) whose path ends with the container's id. */
export function cgroupDirsOf(id: string): string[] {
  const out: string[] = [];
  const base = '/sys/fs/cgroup';
  const walk = (d: string, depth: number): void => {
    let entries: fs.Dirent[];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(d, e.name);
      if (e.name === id) out.push(p);
      else if (depth < 4) walk(p, depth + 1);
    }
  };
  walk(base, 0);
  return out;
}

/** Remove the container's cgroup directories once nothing is in them. */
export function removeCgroups(id: string): void {
  for (const d of cgroupDirsOf(id)) try { fs.rmdirSync(d); } catch { /* busy or gone */ }
}
