/**
 * The embedded etcd's data dir: made private (mode 0700), and its pid file, written once etcd
 * runs, removed when it stops, and read at the next start to find and kill an etcd that a crash
 * left holding the dir.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

import { UnavailableError } from '../../common/errors.js';
import { isErrno } from './errno.js';

const PID_FILE = 'etcd.pid';
const LEFTOVER_EXIT_TIMEOUT_MS = 5_000;

/**
 * Creates the data dir (mode 0700, also if it exists) and kills a crash's leftover etcd that
 * still holds it. Returns the path of its pid file.
 * @throws UnavailableError if a running server's etcd holds the dir, or a leftover cannot be
 *   killed.
 */
export async function prepareDataDir(dataDir: string): Promise<string> {
  await fs.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await fs.chmod(dataDir, 0o700);
  const pidFile = path.join(dataDir, PID_FILE);
  await killLeftover(pidFile, dataDir);
  return pidFile;
}

/** Records the pid of the etcd started on the data dir. */
export async function writePidFile(pidFile: string, pid: number): Promise<void> {
  await fs.writeFile(pidFile, `${pid}\n`, { mode: 0o600 });
}

/** Removes the pid file if it still names `pid`. */
export async function removePidFile(pidFile: string, pid: number | undefined): Promise<void> {
  try {
    // A later start may already have replaced it with its own pid.
    if (Number.parseInt(await fs.readFile(pidFile, 'utf8'), 10) === pid) await fs.unlink(pidFile);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

/**
 * Kills (SIGKILL) the etcd named by the pid file if it is still alive and uses this data dir,
 * and waits for it to go: it would otherwise hold the data dir's lock and etcd would hang.
 */
async function killLeftover(pidFile: string, dataDir: string): Promise<void> {
  let pid: number;
  try {
    pid = Number.parseInt(await fs.readFile(pidFile, 'utf8'), 10);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  if (!(Number.isInteger(pid) && pid > 0) || pid === process.pid) return;
  const argv = await processArgv(pid);
  if (argv === undefined || !isEtcdFor(argv, dataDir)) return;
  // An etcd whose parent still runs belongs to a live server (ours are bound to their parent
  // with --pdeathsig): refuse rather than pull the store from under it. Only an orphan, adopted
  // by init, is a crash leftover.
  const ppid = await parentPid(pid);
  if (ppid !== undefined && ppid !== 1) {
    throw new UnavailableError(
      `${dataDir} is in use by a running etcd (pid ${pid}, started by pid ${ppid}): is another ` +
        'citadel-server using this --data-dir? Stop it or choose another folder',
    );
  }

  try {
    process.kill(pid, 'SIGKILL');
  } catch (err) {
    if (isErrno(err, 'ESRCH')) return;
    throw new UnavailableError(
      `a leftover etcd (pid ${pid}) holds ${dataDir} and cannot be killed`,
      { cause: err },
    );
  }
  // Not our child, so there is no exit event to wait on: poll /proc with a deadline.
  const deadline = Date.now() + LEFTOVER_EXIT_TIMEOUT_MS;
  while (await isAlive(pid)) {
    if (Date.now() > deadline) {
      throw new UnavailableError(`leftover etcd (pid ${pid}) on ${dataDir} did not exit`);
    }
    await delay(20);
  }
}

/** The parent pid of a process, or undefined if it is gone. */
async function parentPid(pid: number): Promise<number | undefined> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

/** The argv of a live process, or undefined if it is gone (or a zombie). */
async function processArgv(pid: number): Promise<string[] | undefined> {
  try {
    const raw = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8');
    const argv = raw.split('\0');
    if (argv.at(-1) === '') argv.pop();
    return argv.length > 0 ? argv : undefined;
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ESRCH')) return undefined;
    throw err;
  }
}

function isEtcdFor(argv: readonly string[], dataDir: string): boolean {
  const exe = argv[0] ?? '';
  if (!path.basename(exe).includes('etcd')) return false;
  return argv.some(
    (arg, i) =>
      arg === `--data-dir=${dataDir}` ||
      arg === `-data-dir=${dataDir}` ||
      ((arg === '--data-dir' || arg === '-data-dir') && argv[i + 1] === dataDir),
  );
}

/** True while the process exists and is not a zombie (a zombie holds no locks). */
async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    // The state follows the parenthesised command name, which may itself hold spaces.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ESRCH')) return false;
    throw err;
  }
}
