/**
 * The ctnet daemon of each lab host: started detached inside the host's namespace with its own
 * roots and socket, driven through the same API client as the CLI (readiness, cluster forming,
 * removing its containers before the lab goes).
 */
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { Client } from "../client/client.js";
import { SystemError } from "../errors.js";
import type { HostState, LabState } from "./state.js";
import { netnsPath } from "./state.js";

/** bin/ sits two levels up from both src/lab/ (under tsx) and dist/lab/ (built). */
export const BIN_DIR = fileURLToPath(new URL("../../bin", import.meta.url));
const CTNET = `${BIN_DIR}/ctnet`;
const READY_TIMEOUT_MS = 30_000;
const API_TIMEOUT_MS = 60_000;

export const hostUrl = (host: HostState) => `unix://${host.socket}`;

function clientOf(host: HostState): Client {
  return new Client({ host: hostUrl(host) });
}

/**
 * Starts the host's daemon with nsenter --net only: unlike `ip netns exec` it keeps the machine's
 * mount namespace, where the daemon's sandbox and image mounts must live to be seen (and removed)
 * by everyone. Detached in its own session, it outlives `lab up`. Resolves with its pid once the
 * API answers.
 */
export async function startDaemon(lab: LabState, host: HostState): Promise<number> {
  mkdirSync(host.dataRoot, { recursive: true });
  mkdirSync(host.execRoot, { recursive: true });
  mkdirSync(dirname(host.log), { recursive: true });
  const args = [
    `--net=${netnsPath(host.netns)}`,
    "--",
    CTNET,
    "daemon",
    "--data-root",
    host.dataRoot,
    "--exec-root",
    host.execRoot,
    "-H",
    hostUrl(host),
    // An address inside the lab: containers' lookups never reach the machine's own resolver.
    "--dns",
    lab.labAddr,
    "--log-level",
    lab.logLevel,
    // Set also without a cluster, so that one formed later by hand names the hosts apart: they
    // all share the machine's host name.
    "--node-name",
    host.name,
    "--advertise-addr",
    host.addr,
  ];
  const out = openSync(host.log, "a");
  let exited: string | undefined;
  try {
    const child = spawn("nsenter", args, { detached: true, stdio: ["ignore", out, out] });
    child.on("exit", (code, sig) => {
      exited = sig ?? String(code);
    });
    child.on("error", (err) => {
      exited = err.message;
    });
    child.unref();
    const pid = child.pid;
    if (pid === undefined)
      throw new SystemError(`cannot start the daemon of ${host.name}: nsenter did not start`);
    host.pid = pid;
  } finally {
    closeSync(out);
  }
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const client = clientOf(host);
  for (;;) {
    if (exited !== undefined)
      throw new SystemError(`the daemon of ${host.name} exited (${exited}):\n${logTail(host)}`);
    try {
      await client.request("GET", "/_ping", { signal: AbortSignal.timeout(2_000) });
      return host.pid;
    } catch {
      // not listening yet
    }
    if (Date.now() >= deadline)
      throw new SystemError(
        `the daemon of ${host.name} did not answer within ${READY_TIMEOUT_MS / 1000} s:\n${logTail(host)}`,
      );
    await sleep(50);
  }
}

export function logTail(host: HostState, chars = 2_000): string {
  try {
    return readFileSync(host.log, "utf8").slice(-chars);
  } catch {
    return "(no log)";
  }
}

/** Whether the host's daemon answers on its socket. */
export async function daemonAnswers(host: HostState): Promise<boolean> {
  try {
    await clientOf(host).request("GET", "/_ping", { signal: AbortSignal.timeout(2_000) });
    return true;
  } catch {
    return false;
  }
}

/** Makes `host` the cluster's first member; resolves with the etcd client address others join. */
export async function clusterInit(host: HostState): Promise<string> {
  return (await clientOf(host).clusterInit({ AdvertiseAddr: host.addr })).Addr;
}

export function clusterJoin(host: HostState, addr: string, member: boolean): Promise<void> {
  return clientOf(host).clusterJoin({ Addr: addr, AdvertiseAddr: host.addr, Member: member });
}

/**
 * `rm -f` of every container of the host, so the daemon itself takes down their processes,
 * namespaces and mounts. Returns what failed, for the caller to clean up the hard way.
 */
export async function removeContainers(host: HostState): Promise<string[]> {
  const client = clientOf(host);
  const problems: string[] = [];
  const list = await client.request<{ Id: string }[]>("GET", "/containers/json", {
    query: { all: true },
    signal: AbortSignal.timeout(API_TIMEOUT_MS),
  });
  for (const c of list) {
    try {
      await client.request("DELETE", `/containers/${c.Id}`, {
        query: { force: true },
        signal: AbortSignal.timeout(API_TIMEOUT_MS),
      });
    } catch (err) {
      problems.push(`${host.name}: rm -f ${c.Id.slice(0, 12)}: ${(err as Error).message}`);
    }
  }
  return problems;
}

/** Whether `pid` is still this host's daemon (and not a later process that reused the pid). */
export function isDaemonOf(host: HostState, pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(host.socket);
  } catch {
    return false;
  }
}
