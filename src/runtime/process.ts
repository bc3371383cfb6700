import { closeSync, openSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { SystemError } from "../errors.js";
import { native } from "../kernel/native.js";
import type { LaunchStdio } from "./console.js";
import { EXIT_FILE_INSIDE, INIT_INSIDE, TINI_INSIDE } from "./rootfs.js";

export const INIT = fileURLToPath(new URL("../../libexec/ctnet-init", import.meta.url));
/**
 * PID 1 of containers with a TTY (Debian's tini package): it puts the command in the terminal's
 * foreground and forwards signals to it, which a shell cannot do for its background job. Static,
 * so that it runs in any image.
 */
export const TINI = "/usr/bin/tini-static";
const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface LaunchSpec {
  cmd: string[];
  env: string[];
  hostname: string;
  /** network namespace to run in; undefined runs in the daemon's own (--net host) */
  netnsPath?: string;
  /** files bind-mounted over /etc/hosts, /etc/resolv.conf and /etc/hostname ("" keeps the host's) */
  hostsPath: string;
  resolvPath: string;
  hostnamePath: string;
  logPath: string;
  exitFile: string;
  /** an image's root filesystem, already mounted: the container is rooted there (chroot by unshare) */
  rootfs?: string;
  workingDir?: string;
  /** streams relayed by the daemon; without, stdin is /dev/null and output goes to the log file */
  stdio?: LaunchStdio;
}

export interface Launched {
  /** 0 when the container was over before its init could be seen */
  pid: number;
  pidStartTime: number;
  runnerPid: number;
  /** settles when the container's process tree has ended */
  exit: Promise<ExitStatus>;
}

/** How a watched process ended: exit code, or signal; -1 where unknown (not our child). */
export interface ExitStatus {
  code: number;
  signal: number;
}

/**
 * Calls `onExit` once when the process ends. If it is already gone, on the next tick with an
 * unknown status.
 */
export function watchExit(pid: number, onExit: (status: ExitStatus) => void): void {
  try {
    native.watchExit(pid, (code, signal) => onExit({ code, signal }));
  } catch {
    setImmediate(() => onExit({ code: -1, signal: -1 }));
  }
}

/** Field 22 of /proc/PID/stat: tells our process apart from a later one that reuses its pid. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number, startTime: number): boolean {
  if (pid <= 0) return false;
  const now = processStartTime(pid);
  if (now !== startTime) return false;
  return isRunning(pid);
}

/** Whether pid exists and has not exited: a zombie has (only its parent's wait is missing), though kill(pid, 0) still finds it. */
export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat[stat.lastIndexOf(")") + 2] !== "Z";
  } catch {
    return false;
  }
}

export function readExitCode(exitFile: string): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(exitFile, "utf8").trim(), 10);
    return Number.isNaN(n) ? undefined : n;
  } catch {
    return undefined;
  }
}

function firstChild(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim();
    return text ? Number(text.split(" ")[0]) : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts a container's process tree with standard tools: nsenter(1) joins the sandbox's network
 * namespace, unshare(1) makes the rest and forks our init as PID 1. unshare's --kill-child ties the
 * container's life to the unshare process, so killing that one process always ends the container.
 * The tree is detached from the daemon (its own session), so containers outlive a daemon restart.
 */
export async function launch(spec: LaunchSpec): Promise<Launched> {
  if (spec.cmd.length === 0) throw new SystemError("no command given for the container");
  const ownUts = spec.netnsPath !== undefined;
  const unshare = ["unshare", "--fork", "--pid", "--mount-proc", "--mount", "--ipc", "--kill-child"];
  if (ownUts) unshare.push("--uts");
  if (spec.rootfs) unshare.push(`--root=${spec.rootfs}`);
  if (spec.workingDir) unshare.push(`--wd=${spec.workingDir}`);
  const hostname = ownUts ? spec.hostname : "";
  const tty = spec.stdio?.tty ? ["--tty", spec.rootfs ? TINI_INSIDE : TINI] : [];
  // In an image the /etc files, the init and tini are already mounted into the root filesystem.
  const init = spec.rootfs
    ? ["/bin/sh", INIT_INSIDE, ...tty, "", "", "", hostname, EXIT_FILE_INSIDE, ...spec.cmd]
    : [
        INIT,
        ...tty,
        spec.hostsPath,
        spec.resolvPath,
        spec.hostnamePath,
        hostname,
        spec.exitFile,
        ...spec.cmd,
      ];
  const argv = spec.netnsPath
    ? ["nsenter", `--net=${spec.netnsPath}`, "--", ...unshare, "--", ...init]
    : [...unshare, "--", ...init];
  const env = new Map<string, string>([
    ["PATH", DEFAULT_PATH],
    ["HOSTNAME", spec.hostname],
  ]);
  for (const kv of spec.env) {
    const eq = kv.indexOf("=");
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  // As Docker: a terminal's programs need to know what it is.
  if (spec.stdio?.tty && !env.has("TERM")) env.set("TERM", "xterm");
  const envList = [...env].map(([k, v]) => `${k}=${v}`);
  let runnerPid: number;
  if (spec.stdio) {
    try {
      runnerPid = native.spawnStdio(argv, envList, spec.stdio.fds, spec.stdio.tty);
    } catch (err) {
      throw new SystemError(`cannot start the container process: ${(err as Error).message}`);
    }
    spec.stdio.spawned();
  } else {
    const log = openSync(spec.logPath, "a", 0o640);
    try {
      runnerPid = native.spawnDetached(argv, envList, log, log);
    } catch (err) {
      throw new SystemError(`cannot start the container process: ${(err as Error).message}`);
    } finally {
      closeSync(log);
    }
  }
  let exited = false;
  const exit = new Promise<ExitStatus>((resolve) =>
    watchExit(runnerPid, (status) => {
      exited = true;
      resolve(status);
    }),
  );
  // unshare forks our init a moment after it starts; its pid is what Docker calls State.Pid.
  for (let i = 0; i < 400 && !exited; i++) {
    const pid = firstChild(runnerPid);
    if (pid) {
      const pidStartTime = processStartTime(pid);
      if (pidStartTime !== undefined) return { pid, pidStartTime, runnerPid, exit };
    }
    await sleep(i < 20 ? 1 : 10);
  }
  // A command fed its input in advance (`echo exit | docker run -i`) can be over before its pid
  // was seen: the init's record of its status tells such a run from one that never started.
  if (exited && readExitCode(spec.exitFile) !== undefined)
    return { pid: 0, pidStartTime: 0, runnerPid, exit };
  try {
    process.kill(runnerPid, "SIGKILL");
  } catch {
    // already gone
  }
  const tail = readFileSync(spec.logPath, "utf8").split("\n").slice(-5).join("\n").trim();
  throw new SystemError(`the container process did not start${tail ? `: ${tail}` : ""}`);
}

export function sendSignal(pid: number, signal: NodeJS.Signals | number): boolean {
  // kill(0) would signal the daemon's own process group.
  if (pid <= 0) return false;
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}
