import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { SystemError } from "../errors.js";
import { log } from "../log.js";
import { isRunning } from "../runtime/process.js";
import type { EtcdMemberSpec } from "./config.js";

const ETCD = "etcd";

/**
 * The etcd member ctnet runs on this host (Debian's etcd-server). It is started detached, in its
 * own session: like the containers, it outlives a daemon crash or restart, and the next daemon
 * finds it by its pid file. Its data lives in the daemon's data root.
 */
export class EtcdMember {
  readonly dataDir: string;
  private readonly pidFile: string;
  private readonly logFile: string;

  constructor(dataRoot: string, execRoot: string) {
    this.dataDir = join(dataRoot, "etcd");
    this.pidFile = join(execRoot, "etcd.pid");
    this.logFile = join(execRoot, "etcd.log");
  }

  /** The pid of our etcd if it runs. */
  running(): number | undefined {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, "utf8").trim());
    } catch {
      return undefined;
    }
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      return comm === ETCD && isRunning(pid) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** Starts the member unless it runs already; its data directory decides whether it is new. */
  start(m: EtcdMemberSpec): void {
    if (this.running()) return;
    mkdirSync(this.dataDir, { recursive: true, mode: 0o700 });
    const args = [
      "--name",
      m.name,
      "--data-dir",
      this.dataDir,
      "--listen-client-urls",
      m.clientUrl,
      "--advertise-client-urls",
      m.clientUrl,
      "--listen-peer-urls",
      m.peerUrl,
      "--initial-advertise-peer-urls",
      m.peerUrl,
      "--initial-cluster",
      m.initialCluster,
      "--initial-cluster-state",
      m.initialState,
      "--initial-cluster-token",
      "ctnet",
      // Lab hosts share one machine's disk and cores: etcd's defaults (100 ms / 1 s) hold there.
      "--heartbeat-interval",
      "100",
      "--election-timeout",
      "1000",
      "--logger",
      "zap",
      "--log-level",
      "warn",
    ];
    const out = openSync(this.logFile, "a");
    try {
      const child = spawn(ETCD, args, { detached: true, stdio: ["ignore", out, out] });
      if (child.pid === undefined) throw new SystemError(`cannot start ${ETCD}: is etcd-server installed?`);
      child.on("error", (err) => log.error({ err }, "etcd failed to start"));
      child.unref();
      writeFileSync(this.pidFile, `${child.pid}\n`);
      log.info({ pid: child.pid, name: m.name, client: m.clientUrl }, "etcd member started");
    } finally {
      closeSync(out);
    }
  }

  async stop(): Promise<void> {
    const pid = this.running();
    if (pid) {
      process.kill(pid, "SIGTERM");
      for (let i = 0; i < 50 && this.running(); i++) await sleep(100);
      if (this.running()) process.kill(pid, "SIGKILL");
    }
    rmSync(this.pidFile, { force: true });
  }

  removeData(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** The end of its log, for an error message when it does not come up. */
  logTail(): string {
    try {
      return readFileSync(this.logFile, "utf8").split("\n").slice(-5).join("\n");
    } catch {
      return "";
    }
  }
}
