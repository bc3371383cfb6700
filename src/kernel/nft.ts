/**
 * nftables in text syntax (nft 1.0.6's JSON input is unreliable). Commands apply in the network
 * namespace of the calling thread: wrap a call in withNetns() (or pass nsPath) to target another.
 * Through libnftables one element add costs ~0.1 ms; spawning `nft -f -` costs milliseconds and
 * is only the fallback for an addon built without libnftables.
 */
import { spawnSync } from "node:child_process";
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

/** Applies `text` atomically (one nft transaction); throws SystemError with nft's message. */
export function runNft(text: string, nsPath?: string): void {
  if (nsPath === undefined) runText(text);
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
