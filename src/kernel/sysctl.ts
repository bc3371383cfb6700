/**
 * sysctl by key. Files under /proc/sys/net belong to the network namespace of the thread that
 * opens them (checked in test/integration/kernel-native.test.ts), so a namespace's values are
 * read and written by opening the file while switched into it.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { InvalidParameterError } from "../errors.js";
import { withNetns } from "./netns.js";

/**
 * 'net.ipv4.ip_forward' or 'net/ipv4/conf/eth0/disable_ipv6'. As with sysctl(8), a key that
 * contains '/' is taken as a path, so use that form for interface names with dots (eth0.100).
 */
export function sysctlPath(key: string): string {
  const rel = key.includes("/") ? key : key.replaceAll(".", "/");
  const parts = rel.split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) {
    throw new InvalidParameterError(`invalid sysctl key: ${key}`);
  }
  return `/proc/sys/${rel}`;
}

function inNetns<T>(nsPath: string | undefined, fn: () => T): T {
  return nsPath === undefined ? fn() : withNetns(nsPath, fn);
}

/** The value without its trailing newline. */
export function readSysctl(key: string, nsPath?: string): string {
  const path = sysctlPath(key);
  return inNetns(nsPath, () => readFileSync(path, "utf8")).trimEnd();
}

export function writeSysctl(key: string, value: string, nsPath?: string): void {
  const path = sysctlPath(key);
  inNetns(nsPath, () => writeFileSync(path, value));
}
