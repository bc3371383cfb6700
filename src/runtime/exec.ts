/**
 * Processes started inside a running container (the Docker API's exec instances): nsenter(1)
 * joins the namespaces and the root of the container's PID 1. With a TTY the process gets a
 * pseudo-terminal from the native addon; otherwise plain pipes (exec is not on the hot path, so
 * Node's own spawn will do).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, readFileSync } from "node:fs";
import { constants } from "node:os";
import type { Readable, Writable } from "node:stream";
import { ReadStream } from "node:tty";
import { ConflictError, NotFoundError, SystemError } from "../errors.js";
import { native } from "../kernel/native.js";
import { terminalInput } from "./console.js";
import { type ExitStatus, watchExit } from "./process.js";
import { PTMX_INSIDE } from "./rootfs.js";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Docker keeps exec instances until their container goes; ctnet forgets them after a while instead. */
const FORGET_AFTER_MS = 10 * 60_000;

export interface ExecConfig {
  containerId: string;
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
  tty: boolean;
  attachStdin: boolean;
  attachStdout: boolean;
  attachStderr: boolean;
  detachKeys: string;
  /** [rows, cols] of the terminal at start */
  consoleSize?: [number, number];
}

export interface ExecRecord {
  id: string;
  config: ExecConfig;
  running: boolean;
  /** null until the process has exited */
  exitCode: number | null;
  pid: number;
  started: boolean;
  process?: ExecProcess;
}

export interface ExecProcess {
  pid: number;
  /** one raw stream through a terminal rather than separate stdout and stderr */
  tty: boolean;
  /** stdout, or everything the terminal shows with a TTY; emits 'close' when no more will come */
  output: Readable | undefined;
  /** undefined with a TTY (one stream) or when stderr is not attached */
  stderr: Readable | undefined;
  /** the process's stdin when attached; with a TTY, the terminal's input */
  input: Writable | undefined;
  resize(rows: number, cols: number): void;
  /** settles with Docker's exit code (128 + signal for a killed process) */
  exit: Promise<number>;
}

/** The exec instances of the daemon, by id. */
export class Execs {
  private readonly records = new Map<string, ExecRecord>();

  create(config: ExecConfig): ExecRecord {
    const record: ExecRecord = {
      id: randomBytes(32).toString("hex"),
      config,
      running: false,
      exitCode: null,
      pid: 0,
      started: false,
    };
    this.records.set(record.id, record);
    this.forgetLater(record);
    return record;
  }

  get(id: string): ExecRecord {
    const r = this.records.get(id);
    if (!r) throw new NotFoundError(`No such exec instance: ${id}`);
    return r;
  }

  /** Starts the instance in the container whose PID 1 is `targetPid`. */
  start(id: string, targetPid: number): ExecProcess {
    const r = this.get(id);
    if (r.started) {
      throw new ConflictError(
        r.running ? `Exec command ${id} is already running` : `Exec command ${id} has already run`,
      );
    }
    const proc = spawnExec(r.config, targetPid);
    r.started = true;
    r.running = true;
    r.pid = proc.pid;
    r.process = proc;
    void proc.exit.then((code) => {
      r.running = false;
      r.exitCode = code;
      r.process = undefined;
      this.forgetLater(r);
    });
    return proc;
  }

  private forgetLater(r: ExecRecord): void {
    const timer = setTimeout(() => {
      if (!r.running) this.records.delete(r.id);
    }, FORGET_AFTER_MS);
    timer.unref();
  }
}

/** The container's own environment (its PID 1's), then the exec's, as Docker merges them. */
function execEnv(targetPid: number, config: ExecConfig): string[] {
  const env = new Map<string, string>([["PATH", DEFAULT_PATH]]);
  const set = (kv: string) => {
    const eq = kv.indexOf("=");
    if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
  };
  try {
    readFileSync(`/proc/${targetPid}/environ`, "utf8").split("\0").forEach(set);
  } catch {
    // gone: nsenter will say so
  }
  config.env.forEach(set);
  if (config.tty && !env.has("TERM")) env.set("TERM", "xterm");
  return [...env].map(([k, v]) => `${k}=${v}`);
}

function nsenterArgv(targetPid: number, config: ExecConfig): string[] {
  const argv = ["nsenter", `--target=${targetPid}`, "--net", "--uts", "--ipc", "--mount", "--pid", "--root"];
  // --wd=DIR would open DIR in the daemon's file system; --wdns resolves it inside the new root.
  argv.push(config.workingDir ? `--wdns=${config.workingDir}` : "--wd");
  return [...argv, "--", ...config.cmd];
}

const exitCodeOf = (code: number | null, signal: NodeJS.Signals | number | null): number => {
  if (code !== null && code >= 0) return code;
  const n = typeof signal === "string" ? constants.signals[signal] : signal;
  return n !== null && n !== undefined && n > 0 ? 128 + n : 255;
};

export function spawnExec(config: ExecConfig, targetPid: number): ExecProcess {
  const argv = nsenterArgv(targetPid, config);
  const env = execEnv(targetPid, config);
  return config.tty ? spawnOnPty(config, argv, env, targetPid) : spawnOnPipes(config, argv, env);
}

function spawnOnPipes(config: ExecConfig, argv: string[], env: string[]): ExecProcess {
  const envObject = Object.fromEntries(
    env.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
  const child = spawn(argv[0] as string, argv.slice(1), {
    env: envObject,
    stdio: [
      config.attachStdin ? "pipe" : "ignore",
      config.attachStdout ? "pipe" : "ignore",
      config.attachStderr ? "pipe" : "ignore",
    ],
    // Its own session, as containers have: the daemon's terminal signals never reach it.
    detached: true,
  });
  const exit = new Promise<number>((resolve) => {
    child.once("error", () => resolve(126));
    child.once("exit", (code, signal) => resolve(exitCodeOf(code, signal)));
  });
  // A client that stops reading must not crash the daemon through EPIPE on stdin.
  child.stdin?.on("error", () => undefined);
  if (child.pid === undefined) {
    throw new SystemError(`cannot start ${argv[0]}`);
  }
  return {
    pid: child.pid,
    tty: false,
    output: child.stdout ?? undefined,
    stderr: child.stderr ?? undefined,
    input: child.stdin ?? undefined,
    resize: () => undefined,
    exit,
  };
}

function spawnOnPty(config: ExecConfig, argv: string[], env: string[], targetPid: number): ExecProcess {
  // A container made from an image has its own devpts instance: its terminal is one of those.
  const ptmx = `/proc/${targetPid}/root/${PTMX_INSIDE}`;
  const { master, slave } = existsSync(ptmx) ? native.openptyIn(ptmx) : native.openpty();
  let pid: number;
  try {
    if (config.consoleSize) native.ptyResize(master, config.consoleSize[0], config.consoleSize[1]);
    pid = native.spawnStdio(argv, env, [slave, slave, slave], true);
  } catch (err) {
    closeSync(master);
    throw new SystemError(`cannot start ${argv[0]} on a terminal: ${(err as Error).message}`);
  } finally {
    // Only the child may hold the slave: the master reads EIO once the last holder is gone.
    closeSync(slave);
  }
  // A tty handle polls the master on the event loop; fs streams would pin a thread-pool thread
  // in a blocking read for the whole session.
  const output = new ReadStream(master);
  let open = true;
  output.on("error", () => undefined);
  output.on("close", () => {
    open = false;
  });
  const exit = new Promise<number>((resolve) =>
    watchExit(pid, (s: ExitStatus) => resolve(exitCodeOf(s.code, s.signal))),
  );
  // A process that does not read its input stalls only its own client.
  const input = terminalInput(master, () => open);
  return {
    pid,
    tty: true,
    output,
    stderr: undefined,
    input,
    resize: (rows, cols) => {
      if (open) native.ptyResize(master, rows, cols);
    },
    exit,
  };
}
