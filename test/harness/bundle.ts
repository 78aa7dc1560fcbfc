// OCI bundles for container tests: a root filesystem of one static busybox
// (Debian's busybox-static), a config.json from `runc spec` with what the
// test asks, containers run by runc with ids unique to this test run.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

export const BUSYBOX = '/bin/busybox';

export interface BundleOptions {
  /** The container's command. */
  args: string[];
  /** Host directories bound into the container: destination → source. */
  binds?: Record<string, string>;
  hostname?: string;
  /** Share the host's network namespace (no network namespace of its own). */
  hostNetwork?: boolean;
}

/** Runs a command; throws with its output if it fails. */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, encoding: 'utf8', timeout: opts.timeoutMs ?? 60000, stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) throw new Error(`${cmd} ${args.join(' ')}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: status ${r.status}\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** A busybox root filesystem at dir/rootfs: the binary and the applets the tests use. */
function makeRootfs(rootfs: string): void {
  if (!/statically linked/.test(run('file', ['-L', BUSYBOX]))) throw new Error(`${BUSYBOX} is not static (install busybox-static)`);
  for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'etc']) fs.mkdirSync(path.join(rootfs, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(rootfs, 'bin/busybox'));
  fs.chmodSync(path.join(rootfs, 'bin/busybox'), 0o755);
  for (const applet of ['sh', 'sleep', 'echo', 'cat', 'nc', 'ls', 'hostname']) fs.symlinkSync('busybox', path.join(rootfs, 'bin', applet));
}

/** A bundle at dir: rootfs and config.json (runc spec's defaults, then ours). */
export function makeBundle(dir: string, o: BundleOptions): string {
  fs.mkdirSync(dir, { recursive: true });
  makeRootfs(path.join(dir, 'rootfs'));
  run('runc', ['spec'], { cwd: dir });
  const cfgPath = path.join(dir, 'config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgPath, 'utf8'));
  cfg.process.terminal = false;
  cfg.process.args = o.args;
  if (o.hostname) cfg.hostname = o.hostname;
  // Root here lacks CAP_SYS_RESOURCE: a container may not be given more than we have.
  cfg.process.rlimits = [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }];
  for (const [dest, src] of Object.entries(o.binds ?? {})) {
    fs.mkdirSync(path.join(dir, 'rootfs', dest), { recursive: true });
    cfg.mounts.push({ destination: dest, type: 'bind', source: src, options: ['rbind', 'rw'] });
  }
  if (o.hostNetwork) cfg.linux.namespaces = cfg.linux.namespaces.filter((n: { type: string }) => n.type !== 'network');
  fs.writeFileSync(cfgPath, JSON.stringify(cfg, null, 2));
  return dir;
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
