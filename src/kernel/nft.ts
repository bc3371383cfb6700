/**
 * nftables in text syntax (nft 1.0.6's JSON input is unreliable). Commands apply in the network
 * namespace of the calling thread: wrap a call in withNetns() (or pass nsPath) to target another.
 * Through libnftables one element add costs ~0.1 ms; spawning `nft -f -` costs milliseconds and
 * is only the fallback for an addon built without libnftables.
 */
import { spawnSync } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { SystemError } from "../errors.js";
import { native } from "./native.js";
import { withNetns } from "./netns.js";

export type NftFamily = "ip" | "ip6" | "inet" | "arp" | "bridge" | "netdev";

function runText(text: string): void {
  if (native.nftRun) {
    const result = native.nftRun(text);
    if (!result.ok) throw new SystemError(`nft: ${result.error.trim() || "command failed"}`);
    return;
  }
  const child = spawnSync("nft", ["-f", "-"], { input: text, encoding: "utf8" });
  if (child.error) throw new SystemError(`nft: ${child.error.message}`);
  if (child.status !== 0)
    throw new SystemError(`nft: ${child.stderr.trim() || `exit status ${child.status}`}`);
}

/**
 * libnftables waits for the kernel's answer with select(), which aborts the whole process (glibc's
 * fortified FD_SET: "bit out of range 0 - FD_SETSIZE") when its netlink socket's descriptor is
 * 1024 or more. The daemon's own namespace keeps one socket opened at start-up, low; another
 * namespace needs a new socket per call, which takes the lowest free descriptor. Past this many
 * open descriptors (a daemon with a hundred or so sandboxes: DNS listeners, netlink sockets) such
 * a call runs `nft -f -` in a child instead, which starts with three descriptors.
 */
const LOW_FD_LIMIT = 1000;

function lowestFreeFd(): number {
  const fd = openSync("/dev/null", "r");
  closeSync(fd);
  return fd;
}

function runChild(text: string, nsPath: string): void {
  const child = spawnSync("nsenter", [`--net=${nsPath}`, "nft", "-f", "-"], {
    input: text,
    encoding: "utf8",
  });
  if (child.error) throw new SystemError(`nft: ${child.error.message}`);
  if (child.status !== 0)
    throw new SystemError(`nft: ${child.stderr.trim() || `exit status ${child.status}`}`);
}

/** Applies `text` atomically (one nft transaction); throws SystemError with nft's message. */
export function runNft(text: string, nsPath?: string): void {
  if (nsPath === undefined) runText(text);
  else if (native.nftRun && lowestFreeFd() >= LOW_FD_LIMIT) runChild(text, nsPath);
  else withNetns(nsPath, () => runText(text));
}

/** `nft list table` output, for tests and debugging (spawns nft; the child inherits the namespace). */
export function listNftTable(family: NftFamily, name: string, nsPath?: string): string {
  const list = () => spawnSync("nft", ["list", "table", family, name], { encoding: "utf8" });
  const child = nsPath === undefined ? list() : withNetns(nsPath, list);
  if (child.error) throw new SystemError(`nft: ${child.error.message}`);
  if (child.status !== 0) throw new SystemError(`nft: ${child.stderr.trim()}`);
  return child.stdout;
}
