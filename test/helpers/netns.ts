/**
 * Named network namespaces for integration tests, made with iproute2 so a leaked one is easy to
 * spot (`ip netns list | grep ctt-`) and remove by hand.
 */
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";

export interface ExecOptions {
  input?: string;
  timeout?: number;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  status: number | null;
}

export interface TestNetns {
  /** `ctt-<prefix>-<6 hex digits>` */
  name: string;
  /** /run/netns/<name>, usable with withNetns() and the other src/kernel functions. */
  path: string;
  /** Runs `cmd` inside the namespace (`ip netns exec`); never throws on a non-zero status. */
  exec(cmd: string[], opts?: ExecOptions): ExecResult;
  /** Deletes the namespace; safe to call more than once. */
  destroy(): void;
}

export function makeTestNetns(prefix: string): TestNetns {
  const name = `ctt-${prefix}-${randomBytes(3).toString("hex")}`;
  const path = `/run/netns/${name}`;
  const add = spawnSync("ip", ["netns", "add", name], { encoding: "utf8" });
  if (add.error) throw add.error;
  if (add.status !== 0) throw new Error(`ip netns add ${name}: ${add.stderr.trim()}`);
  return {
    name,
    path,
    exec(cmd, opts = {}) {
      const child = spawnSync("ip", ["netns", "exec", name, ...cmd], { encoding: "utf8", ...opts });
      if (child.error) throw child.error;
      return { stdout: child.stdout, stderr: child.stderr, status: child.status };
    },
    destroy() {
      if (!existsSync(path)) return;
      const del = spawnSync("ip", ["netns", "del", name], { encoding: "utf8" });
      if (del.status !== 0 && existsSync(path)) throw new Error(`ip netns del ${name}: ${del.stderr.trim()}`);
    },
  };
}
