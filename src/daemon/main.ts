import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { listen, parseHost } from "../api/server.js";
import { Engine } from "../engine/engine.js";
import { log } from "../log.js";
import { isRunning } from "../runtime/process.js";

export interface DaemonOptions {
  dataRoot: string;
  execRoot: string;
  host: string;
  logLevel?: string;
  dns: string[];
  nodeName?: string;
  clusterStore?: string;
  advertiseAddr?: string;
}

/** Refuses to start a second daemon on the same exec root: two would fight over the same kernel objects. */
function claimPidFile(path: string): void {
  try {
    const pid = Number(readFileSync(path, "utf8").trim());
    if (pid > 0 && pid !== process.pid && isRunning(pid)) {
      throw new Error(`another ctnet daemon (pid ${pid}) is running with this exec root (${path})`);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  writeFileSync(path, `${process.pid}\n`);
}

export async function runDaemon(o: DaemonOptions): Promise<void> {
  if (o.logLevel) log.level = o.logLevel;
  parseHost(o.host);
  const started = Date.now();
  // Claimed first: a second daemon must be refused before it reconciles anything.
  mkdirSync(o.execRoot, { recursive: true, mode: 0o755 });
  const pidFile = join(o.execRoot, "ctnet.pid");
  claimPidFile(pidFile);
  let engine: Engine;
  let server: Awaited<ReturnType<typeof listen>>;
  try {
    engine = await Engine.open({
      dataRoot: o.dataRoot,
      execRoot: o.execRoot,
      dns: o.dns,
      ...(o.nodeName ? { nodeName: o.nodeName } : {}),
      ...(o.clusterStore ? { clusterStore: o.clusterStore } : {}),
      ...(o.advertiseAddr ? { advertiseAddr: o.advertiseAddr } : {}),
    });
    server = await listen(engine, o.host);
  } catch (err) {
    // Half-opened parts (the etcd client, resolvers' sockets) would keep a daemon that serves
    // nothing alive, holding what the next start needs: exit instead.
    rmSync(pidFile, { force: true });
    process.stderr.write(`ctnet daemon: cannot start: ${(err as Error).message}\n`);
    process.exit(1);
  }
  log.info(
    { host: o.host, dataRoot: o.dataRoot, execRoot: o.execRoot, ms: Date.now() - started },
    "ctnet daemon ready",
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down; containers keep running");
    server.close();
    server.closeAllConnections();
    await engine.close();
    const where = parseHost(o.host);
    if ("socketPath" in where) rmSync(where.socketPath, { force: true });
    rmSync(pidFile, { force: true });
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
